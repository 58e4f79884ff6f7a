package org.egeunet.core

/** A width x height in pixels. */
data class Size(val width: Int, val height: Int) {
    init {
        require(width > 0 && height > 0) { "size must be positive, got ${width}x$height" }
    }

    val pixels: Long get() = width.toLong() * height

    val longSide: Int get() = maxOf(width, height)

    /** Width and height swapped: the upright size of a photo whose EXIF orientation rotates it by 90 or 270 degrees. */
    fun transposed() = Size(height, width)

    override fun toString() = "${width}x$height"
}

/**
 * How a photo of size [photo] is handled: decoded with BitmapFactory's `inSampleSize` = [sampleSize] (about
 * [decoded] pixels; the decoder's own rounding may differ by one pixel, so the app uses the size it gets), resized
 * to the model's input for inference, and shown (mask, overlay, area) at [display].
 */
data class SizePlan(val photo: Size, val sampleSize: Int, val decoded: Size, val display: Size) {
    /** Bytes of the decoded ARGB_8888 bitmap. */
    val decodedArgbBytes: Long get() = decoded.pixels * 4

    /** Bytes a full-resolution ARGB_8888 decode would take (what the policy avoids). */
    val fullArgbBytes: Long get() = photo.pixels * 4
}

/**
 * The app's photo-size policy, so that any photo, 50 MP included, fits a phone's memory: the photo is decoded
 * subsampled (a power of two, as BitmapFactory's `inSampleSize` takes it) to the smallest size whose longer side
 * is at most [maxDisplaySide], unless that would put an axis below the model's input size (which the photo had);
 * [maxDecodePixels] caps the decode in every case. The mask and overlay are made at [displaySize] of the decoded
 * image: its own size when it fits [maxDisplaySide], else scaled to fit. Mirrored in `export/golden.py`
 * (`size_plan`), whose golden vectors pin the numbers; the full-resolution masks of `egeunet predict` stay the
 * accuracy reference (android_demo/README.md, "Photo size").
 */
class PhotoSizePolicy(
    val modelWidth: Int,
    val modelHeight: Int,
    val maxDisplaySide: Int = DEFAULT_MAX_DISPLAY_SIDE,
    val maxDecodePixels: Long = DEFAULT_MAX_DECODE_PIXELS,
) {
    init {
        require(modelWidth > 0 && modelHeight > 0) { "model input must be positive, got ${modelWidth}x$modelHeight" }
        require(maxDisplaySide >= maxOf(modelWidth, modelHeight)) {
            "maxDisplaySide $maxDisplaySide is below the model input ${modelWidth}x$modelHeight"
        }
        require(maxDecodePixels >= maxDisplaySide.toLong() * maxDisplaySide) {
            "maxDecodePixels $maxDecodePixels is below a ${maxDisplaySide}x$maxDisplaySide display"
        }
    }

    /** The `inSampleSize` for a photo of (upright) size [photo]: a power of two, at least 1. */
    fun sampleSize(photo: Size): Int {
        var s = 1
        while (sampled(photo, s).longSide > maxDisplaySide) s *= 2
        while (s > 1 && !keepsModelInput(photo, s)) s /= 2
        while (sampled(photo, s).pixels > maxDecodePixels) s *= 2
        return s
    }

    /** Whether subsampling by [s] keeps each axis at least at the model's input size where the photo had it. */
    private fun keepsModelInput(photo: Size, s: Int): Boolean {
        val d = sampled(photo, s)
        return (photo.width < modelWidth || d.width >= modelWidth) &&
            (photo.height < modelHeight || d.height >= modelHeight)
    }

    /** The size shown (mask, overlay, area) for a decoded image of size [decoded]: fits in [maxDisplaySide]. */
    fun displaySize(decoded: Size): Size {
        val long = decoded.longSide
        if (long <= maxDisplaySide) return decoded
        fun scaled(side: Int) = maxOf(1L, (side.toLong() * maxDisplaySide + long / 2) / long).toInt()
        return if (decoded.width >= decoded.height) {
            Size(maxDisplaySide, scaled(decoded.height))
        } else {
            Size(scaled(decoded.width), maxDisplaySide)
        }
    }

    /** The whole plan for a photo of (upright) size [photo]. */
    fun plan(photo: Size): SizePlan {
        val s = sampleSize(photo)
        val decoded = sampled(photo, s)
        return SizePlan(photo, s, decoded, displaySize(decoded))
    }

    companion object {
        /** Longest side of the mask and overlay the app keeps: above a phone screen's width, 16 MB as ARGB. */
        const val DEFAULT_MAX_DISPLAY_SIDE = 2048

        /** Most pixels ever decoded (8 MP: 32 MB as ARGB_8888); only very long panoramas reach it. */
        const val DEFAULT_MAX_DECODE_PIXELS = 8L * 1024 * 1024

        /** The size a sampling decoder returns: each side divided by [s], rounded down, at least 1 (Skia). */
        fun sampled(photo: Size, s: Int): Size {
            require(s >= 1) { "sample size must be at least 1, got $s" }
            return Size(maxOf(1, photo.width / s), maxOf(1, photo.height / s))
        }
    }
}
