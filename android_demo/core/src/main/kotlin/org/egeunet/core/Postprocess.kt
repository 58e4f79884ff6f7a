package org.egeunet.core

/** Lesion area of a binary mask: pixel count and percentage of the image. */
data class LesionArea(val pixels: Int, val totalPixels: Int) {
    /** Computed as Python does (`100.0 * pixels / total`), so both print the same digits. */
    val percent: Double get() = 100.0 * pixels / totalPixels
}

/** An sRGB colour for overlays. */
data class Rgb(val r: Int, val g: Int, val b: Int) {
    init {
        require(r in 0..255 && g in 0..255 && b in 0..255) { "colour components must be 0..255, got ($r, $g, $b)" }
    }
}

/**
 * Contract step 4 and what the app shows: threshold, probability map back at the photo's size, area, overlay.
 * Each function mirrors its Python counterpart (`contract.binarize`, `evaluate.upsample_prob`,
 * `predict.overlay`) and is checked against it by the golden vectors.
 */
object Postprocess {
    /** The overlay look shared with `egeunet predict` (`model/predict.py`): tint and outline colour, tint weight. */
    val OVERLAY_COLOR = Rgb(255, 64, 32)
    const val OVERLAY_ALPHA = 0.45

    /**
     * 1 where probability >= threshold, else 0. The threshold is compared as float32, as NumPy 2 and PyTorch
     * compare a float32 array with a Python float.
     */
    fun binarize(prob: FloatArray, threshold: Double): ByteArray {
        val t = threshold.toFloat()
        return ByteArray(prob.size) { if (prob[it] >= t) 1 else 0 }
    }

    /** The model-resolution probability map resampled to the photo's size (PIL "F" bilinear). */
    fun probabilityAt(prob: FloatArray, width: Int, height: Int, outWidth: Int, outHeight: Int): FloatArray =
        PilBilinear.resizeFloat(prob, width, height, outWidth, outHeight)

    fun area(mask: ByteArray): LesionArea = LesionArea(mask.count { it.toInt() != 0 }, mask.size)

    /**
     * The image with the mask tinted (`(1 - alpha) * pixel + alpha * colour`, float32, truncated to 8 bits) and
     * its outline drawn in [color]. A pixel is outline when it is in the mask and one of its 4 neighbours is not;
     * neighbours wrap around the borders, as `numpy.roll` does in the Python version.
     */
    fun overlay(
        image: RgbImage,
        mask: ByteArray,
        alpha: Double = OVERLAY_ALPHA,
        color: Rgb = OVERLAY_COLOR,
    ): RgbImage {
        val w = image.width
        val h = image.height
        require(mask.size == w * h) { "mask has ${mask.size} pixels, image ${w}x$h has ${w * h}" }
        val keep = (1.0 - alpha).toFloat()
        val a = alpha.toFloat()
        val tint = floatArrayOf(a * color.r.toFloat(), a * color.g.toFloat(), a * color.b.toFloat())
        val solid = byteArrayOf(color.r.toByte(), color.g.toByte(), color.b.toByte())
        val out = image.pixels.copyOf()

        fun inMask(x: Int, y: Int) = mask[((y + h) % h) * w + (x + w) % w].toInt() != 0
        for (y in 0 until h) {
            for (x in 0 until w) {
                if (!inMask(x, y)) continue
                val p = (y * w + x) * 3
                val edge = !(inMask(x, y - 1) && inMask(x, y + 1) && inMask(x - 1, y) && inMask(x + 1, y))
                for (c in 0 until 3) {
                    out[p + c] =
                        if (edge) {
                            solid[c]
                        } else {
                            (keep * (image.pixels[p + c].toInt() and 0xFF).toFloat() + tint[c]).toInt().toByte()
                        }
                }
            }
        }
        return RgbImage(w, h, out)
    }
}
