package org.egeunet.core

import kotlin.math.ceil

/** An 8-bit RGB image, row-major, 3 interleaved bytes per pixel (what the contract's Python side calls H x W x 3). */
class RgbImage(val width: Int, val height: Int, val pixels: ByteArray) {
    init {
        require(width > 0 && height > 0) { "image size must be positive, got ${width}x$height" }
        require(pixels.size == width * height * 3) {
            "expected ${width * height * 3} RGB bytes for ${width}x$height, got ${pixels.size}"
        }
    }

    /** Channel [c] (0 = R) of pixel ([x], [y]) as 0..255. */
    operator fun get(x: Int, y: Int, c: Int): Int = pixels[(y * width + x) * 3 + c].toInt() and 0xFF
}

/**
 * PIL's `Image.resize(size, Image.BILINEAR)`, bit for bit, for 8-bit RGB and 32-bit float images.
 *
 * Mirrors Pillow's `src/libImaging/Resample.c`: a separable triangle filter whose support is widened by the
 * downscale factor (that is what makes PIL's bilinear antialiased when shrinking), per-output coefficients
 * normalised to sum 1; for 8-bit data they are then rounded to 22-bit fixed point and each pass rounds and clips to
 * 0..255; the horizontal pass runs first, over only the rows the vertical pass reads. Float images (the probability
 * map brought back to the photo's size) accumulate in double and store float, as PIL's "F" mode does.
 * Any deviation here shows up as a golden-vector failure in the unit tests.
 */
object PilBilinear {
    private const val PRECISION_BITS = 32 - 8 - 2

    /** Filter taps of one axis: for output i, [count] weights starting at input [start]. */
    internal class Coefficients(
        val outSize: Int,
        val ksize: Int,
        val start: IntArray,
        val count: IntArray,
        val weights: DoubleArray,
    )

    private fun triangle(x: Double): Double {
        val a = if (x < 0.0) -x else x
        return if (a < 1.0) 1.0 - a else 0.0
    }

    internal fun coefficients(inSize: Int, outSize: Int): Coefficients {
        val scale = inSize.toDouble() / outSize
        val filterScale = if (scale < 1.0) 1.0 else scale
        val support = 1.0 * filterScale
        val ksize = ceil(support).toInt() * 2 + 1
        val start = IntArray(outSize)
        val count = IntArray(outSize)
        val weights = DoubleArray(outSize * ksize)
        val ss = 1.0 / filterScale
        for (xx in 0 until outSize) {
            val center = (xx + 0.5) * scale
            var xmin = (center - support + 0.5).toInt()
            if (xmin < 0) xmin = 0
            var xmax = (center + support + 0.5).toInt()
            if (xmax > inSize) xmax = inSize
            xmax -= xmin
            var ww = 0.0
            val base = xx * ksize
            for (x in 0 until xmax) {
                val w = triangle((x + xmin - center + 0.5) * ss)
                weights[base + x] = w
                ww += w
            }
            if (ww != 0.0) {
                for (x in 0 until xmax) weights[base + x] /= ww
            }
            start[xx] = xmin
            count[xx] = xmax
        }
        return Coefficients(outSize, ksize, start, count, weights)
    }

    private fun fixedPoint(c: Coefficients): IntArray = IntArray(c.weights.size) {
        val w = c.weights[it]
        if (w < 0) (-0.5 + w * (1 shl PRECISION_BITS)).toInt() else (0.5 + w * (1 shl PRECISION_BITS)).toInt()
    }

    private fun clip8(acc: Int): Byte {
        val v = acc shr PRECISION_BITS
        return (
            if (v < 0) {
                0
            } else if (v > 255) {
                255
            } else {
                v
            }
            ).toByte()
    }

    /** Resize [src] to [outWidth] x [outHeight] exactly as PIL does for an RGB image. */
    fun resize(src: RgbImage, outWidth: Int, outHeight: Int): RgbImage {
        require(outWidth > 0 && outHeight > 0) { "output size must be positive, got ${outWidth}x$outHeight" }
        val same = outWidth == src.width && outHeight == src.height
        if (same) return RgbImage(src.width, src.height, src.pixels.copyOf())
        val vert = coefficients(src.height, outHeight)
        val firstRow = vert.start[0]
        val lastRow = vert.start[outHeight - 1] + vert.count[outHeight - 1]
        var img = src
        var rowOffset = 0
        if (outWidth != src.width) {
            img = horizontal8(src, coefficients(src.width, outWidth), firstRow, lastRow - firstRow)
            rowOffset = firstRow
        }
        if (outHeight != src.height) img = vertical8(img, vert, rowOffset)
        return img
    }

    private fun horizontal8(src: RgbImage, c: Coefficients, firstRow: Int, rows: Int): RgbImage {
        val k = fixedPoint(c)
        val outW = c.outSize
        val out = ByteArray(outW * rows * 3)
        val inp = src.pixels
        val half = 1 shl (PRECISION_BITS - 1)
        for (yy in 0 until rows) {
            val rowBase = (yy + firstRow) * src.width
            for (xx in 0 until outW) {
                val xmin = c.start[xx]
                val kb = xx * c.ksize
                var s0 = half
                var s1 = half
                var s2 = half
                for (x in 0 until c.count[xx]) {
                    val p = (rowBase + x + xmin) * 3
                    val w = k[kb + x]
                    s0 += (inp[p].toInt() and 0xFF) * w
                    s1 += (inp[p + 1].toInt() and 0xFF) * w
                    s2 += (inp[p + 2].toInt() and 0xFF) * w
                }
                val o = (yy * outW + xx) * 3
                out[o] = clip8(s0)
                out[o + 1] = clip8(s1)
                out[o + 2] = clip8(s2)
            }
        }
        return RgbImage(outW, rows, out)
    }

    private fun vertical8(src: RgbImage, c: Coefficients, rowOffset: Int): RgbImage {
        val k = fixedPoint(c)
        val w = src.width
        val out = ByteArray(w * c.outSize * 3)
        val inp = src.pixels
        val half = 1 shl (PRECISION_BITS - 1)
        for (yy in 0 until c.outSize) {
            val ymin = c.start[yy] - rowOffset
            val kb = yy * c.ksize
            for (xx in 0 until w) {
                var s0 = half
                var s1 = half
                var s2 = half
                for (y in 0 until c.count[yy]) {
                    val p = ((y + ymin) * w + xx) * 3
                    val wt = k[kb + y]
                    s0 += (inp[p].toInt() and 0xFF) * wt
                    s1 += (inp[p + 1].toInt() and 0xFF) * wt
                    s2 += (inp[p + 2].toInt() and 0xFF) * wt
                }
                val o = (yy * w + xx) * 3
                out[o] = clip8(s0)
                out[o + 1] = clip8(s1)
                out[o + 2] = clip8(s2)
            }
        }
        return RgbImage(w, c.outSize, out)
    }

    /** Resize a single-channel float image (row-major [width] x [height]) as PIL's "F" mode bilinear does. */
    fun resizeFloat(src: FloatArray, width: Int, height: Int, outWidth: Int, outHeight: Int): FloatArray {
        require(src.size == width * height) {
            "expected ${width * height} floats for ${width}x$height, got ${src.size}"
        }
        require(outWidth > 0 && outHeight > 0) { "output size must be positive, got ${outWidth}x$outHeight" }
        if (outWidth == width && outHeight == height) return src.copyOf()
        val vert = coefficients(height, outHeight)
        val firstRow = vert.start[0]
        val lastRow = vert.start[outHeight - 1] + vert.count[outHeight - 1]
        var img = src
        var w = width
        var rowOffset = 0
        if (outWidth != width) {
            val c = coefficients(width, outWidth)
            val rows = lastRow - firstRow
            val out = FloatArray(outWidth * rows)
            for (yy in 0 until rows) {
                val rowBase = (yy + firstRow) * width
                for (xx in 0 until outWidth) {
                    var ss = 0.0
                    val kb = xx * c.ksize
                    val xmin = c.start[xx]
                    for (x in 0 until c.count[xx]) ss += img[rowBase + x + xmin].toDouble() * c.weights[kb + x]
                    out[yy * outWidth + xx] = ss.toFloat()
                }
            }
            img = out
            w = outWidth
            rowOffset = firstRow
        }
        if (outHeight != height) {
            val out = FloatArray(w * outHeight)
            for (yy in 0 until outHeight) {
                val ymin = vert.start[yy] - rowOffset
                val kb = yy * vert.ksize
                for (xx in 0 until w) {
                    var ss = 0.0
                    for (y in 0 until vert.count[yy]) ss += img[(y + ymin) * w + xx].toDouble() * vert.weights[kb + y]
                    out[yy * w + xx] = ss.toFloat()
                }
            }
            img = out
        }
        return img
    }
}
