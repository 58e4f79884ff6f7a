package org.egeunet.core

import java.io.File
import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.util.zip.GZIPInputStream
import javax.imageio.ImageIO

/**
 * Reader of the golden vectors written by `egeunet golden` (`export/golden.py`) into
 * `core/src/test/resources/golden`: the manifest plus PNG images/masks and gzip'd little-endian float32 tensors.
 */
class GoldenVectors private constructor(val dir: File, val manifest: JsonObject) {
    val cases: List<GoldenCase> =
        manifest.list("cases").map {
            @Suppress("UNCHECKED_CAST")
            GoldenCase(this, JsonObject(it as Map<String, Any?>, "golden.json case"))
        }

    fun file(name: String): File = File(dir, name).also { check(it.isFile) { "golden file missing: $it" } }

    companion object {
        val instance: GoldenVectors by lazy {
            val url =
                GoldenVectors::class.java.getResource("/golden/golden.json")
                    ?: error("golden/golden.json is not on the test classpath (core/src/test/resources)")
            val file = File(url.toURI())
            GoldenVectors(file.parentFile, JsonObject.parse(file.readText(), "golden.json"))
        }
    }
}

class GoldenCase(private val golden: GoldenVectors, val json: JsonObject) {
    val name = json.string("name")
    val nativeWidth = json.int("native_width")
    val nativeHeight = json.int("native_height")
    private val files = json.obj("files")

    /** False for the preprocessing-only cases, which carry no probabilities or masks. */
    val withModel = files.has("prob")

    fun has(key: String) = files.has(key)

    private fun file(key: String) = golden.file(files.obj(key).string("file"))

    /** sha256 of the decoded content recorded by Python for [key]. */
    fun sha(key: String) = files.obj(key).string("sha256")

    fun rgb(key: String): RgbImage = GoldenCaseFiles.rgb(file(key))

    /** A 0/255 mask PNG as 0/1 bytes. */
    fun mask(key: String): ByteArray = GoldenCaseFiles.mask(file(key))

    fun floats(key: String): FloatArray = GoldenCaseFiles.floats(file(key))
}

/** Readers of the golden file kinds (PNG images and masks, gzip'd little-endian float32). */
object GoldenCaseFiles {
    fun rgb(file: File): RgbImage {
        val img = ImageIO.read(file) ?: error("cannot decode $file")
        val samples = img.raster.getPixels(0, 0, img.width, img.height, null as IntArray?)
        check(samples.size == img.width * img.height * 3) { "$file is not 8-bit RGB" }
        return RgbImage(img.width, img.height, ByteArray(samples.size) { samples[it].toByte() })
    }

    /** An 8-bit RGBA PNG as non-premultiplied ARGB ints (what Android's `Bitmap.getPixels` returns). */
    fun argb(file: File): Triple<Int, Int, IntArray> {
        val img = ImageIO.read(file) ?: error("cannot decode $file")
        val s = img.raster.getPixels(0, 0, img.width, img.height, null as IntArray?)
        check(s.size == img.width * img.height * 4) { "$file is not 8-bit RGBA" }
        val argb = IntArray(img.width * img.height) {
            (s[it * 4 + 3] shl 24) or (s[it * 4] shl 16) or
                (s[it * 4 + 1] shl 8) or
                s[it * 4 + 2]
        }
        return Triple(img.width, img.height, argb)
    }

    /** A 0/255 mask PNG as 0/1 bytes. */
    fun mask(file: File): ByteArray {
        val img = ImageIO.read(file) ?: error("cannot decode $file")
        val samples = img.raster.getPixels(0, 0, img.width, img.height, null as IntArray?)
        check(samples.size == img.width * img.height) { "$file is not a one-channel mask" }
        return ByteArray(samples.size) { if (samples[it] != 0) 1 else 0 }
    }

    fun floats(file: File): FloatArray {
        val bytes = GZIPInputStream(file.inputStream()).use { it.readBytes() }
        val buf = ByteBuffer.wrap(bytes).order(ByteOrder.LITTLE_ENDIAN).asFloatBuffer()
        return FloatArray(buf.remaining()).also { buf.get(it) }
    }
}

fun floatsLittleEndian(values: FloatArray): ByteArray {
    val buf = ByteBuffer.allocate(values.size * 4).order(ByteOrder.LITTLE_ENDIAN)
    values.forEach { buf.putFloat(it) }
    return buf.array()
}
