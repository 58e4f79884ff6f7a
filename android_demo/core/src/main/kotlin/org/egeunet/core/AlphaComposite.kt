package org.egeunet.core

/**
 * Photo pixels with transparency, as the Python reader (`model/imageio.py`, `read_rgb`) turns them into the
 * contract's RGB: composited over an opaque neutral grey ([BACKGROUND] on each channel) with PIL's
 * `Image.alpha_composite` integer arithmetic, so a transparent PNG segments the same on both sides.
 * Fully opaque pixels (every JPEG) pass unchanged.
 */
object AlphaComposite {
    /** The grey behind transparent pixels (R = G = B). */
    const val BACKGROUND = 128

    private const val PRECISION_BITS = 7

    /**
     * One channel value [v] with alpha [a] (not premultiplied, 0..255) over the opaque [BACKGROUND]: Pillow's
     * `ImagingAlphaComposite` with a destination alpha of 255, where its coefficient reduces to `a << 7` exactly.
     */
    fun channel(v: Int, a: Int): Int {
        if (a == 0) return BACKGROUND
        val coef1 = a shl PRECISION_BITS
        val coef2 = (255 shl PRECISION_BITS) - coef1
        val tmp = v * coef1 + BACKGROUND * coef2 + (0x80 shl PRECISION_BITS)
        return (((tmp shr 8) + tmp) shr 8) shr PRECISION_BITS
    }

    /**
     * [count] non-premultiplied ARGB colours (what Android's `Bitmap.getPixels` returns) from [argb] at
     * [argbOffset] into interleaved RGB bytes of [out] at [outOffset], alpha composited over [BACKGROUND].
     */
    fun argbToRgb(argb: IntArray, argbOffset: Int, out: ByteArray, outOffset: Int, count: Int) {
        for (i in 0 until count) {
            val c = argb[argbOffset + i]
            val a = c ushr 24
            val o = outOffset + i * 3
            if (a == 255) {
                out[o] = (c shr 16).toByte()
                out[o + 1] = (c shr 8).toByte()
                out[o + 2] = c.toByte()
            } else {
                out[o] = channel((c shr 16) and 0xFF, a).toByte()
                out[o + 1] = channel((c shr 8) and 0xFF, a).toByte()
                out[o + 2] = channel(c and 0xFF, a).toByte()
            }
        }
    }

    /** A whole ARGB image ([width] x [height], row-major) as the contract's RGB image. */
    fun toRgb(width: Int, height: Int, argb: IntArray): RgbImage {
        require(argb.size == width * height) { "expected ${width * height} ARGB pixels for ${width}x$height" }
        val out = ByteArray(argb.size * 3)
        argbToRgb(argb, 0, out, 0, argb.size)
        return RgbImage(width, height, out)
    }
}
