package org.egeunet.core

import kotlin.test.assertEquals
import kotlin.test.assertTrue
import org.junit.Test

/** Transparent photos: composited over the neutral grey as Python's reader does (golden `alpha.rgba.png`). */
class AlphaCompositeTest {
    private val golden = GoldenVectors.instance
    private val alpha = golden.manifest.obj("alpha")

    @Test
    fun `RGBA pixels over grey match PIL's alpha_composite for every alpha`() {
        assertEquals(
            listOf(AlphaComposite.BACKGROUND, AlphaComposite.BACKGROUND, AlphaComposite.BACKGROUND),
            alpha.ints("background"),
        )
        val (w, h, argb) = GoldenCaseFiles.argb(golden.file(alpha.string("file")))
        assertEquals(256, w)
        val rgb = AlphaComposite.toRgb(w, h, argb)
        assertEquals(alpha.string("rgb_sha256"), sha256Hex(rgb.pixels), "composite differs from PIL's")
        val rampRows = (0 until h).filter { y -> (0 until w).all { x -> argb[y * w + x] ushr 24 == x } }
        assertTrue(rampRows.size >= 5, "expected the alpha ramps 0..255 over fixed colours")
        for (y in rampRows) {
            for (c in 0 until 3) {
                assertEquals(
                    AlphaComposite.BACKGROUND,
                    rgb[0, y, c],
                    "alpha 0 shows the grey, not black",
                )
            }
            for (c in 0 until 3) {
                assertEquals(
                    (argb[y * w + 255] shr (16 - 8 * c)) and 0xFF,
                    rgb[255, y, c],
                    "alpha 255 keeps the colour",
                )
            }
        }
    }

    @Test
    fun `opaque pixels pass unchanged, row by row as the app reads them`() {
        val argb = intArrayOf(0xFF102030.toInt(), 0xFFFFFFFF.toInt(), 0x00FFFFFF, 0x80FF0000.toInt())
        val out = ByteArray(3 + argb.size * 3)
        AlphaComposite.argbToRgb(argb, 0, out, 3, argb.size)
        val v = out.map { it.toInt() and 0xFF }
        assertEquals(listOf(0, 0, 0, 0x10, 0x20, 0x30, 255, 255, 255, 128, 128, 128), v.subList(0, 12))
        // half-transparent red over grey: (255 * 128 + 128 * 127) / 255, PIL rounding
        assertEquals(listOf(192, 64, 64), v.subList(12, 15))
    }
}
