package org.egeunet.core

import kotlin.test.assertEquals
import kotlin.test.assertTrue
import org.junit.Test

/**
 * The photo-size policy and the large-photo path against the Python side (`export/golden.py`: `size_plan`,
 * `compute_large`): the same `inSampleSize`, decoded and display sizes for photos from 1x1 to 100,000 px on a side,
 * and, for an 8448x6336 photo, the same subsampled decode, model input, display mask, area and overlay.
 */
class PhotoSizeTest {
    private val golden = GoldenVectors.instance
    private val meta =
        ModelMetadata.parse(ModelMetadata.jsonFromModelBytes(golden.file("metadata_sample.tflite").readBytes())!!)
    private val policyJson = golden.manifest.obj("size_policy")
    private val large = golden.manifest.obj("large_photo")

    private fun size(list: List<Int>) = Size(list[0], list[1])

    @Suppress("UNCHECKED_CAST")
    private fun objects(o: JsonObject, key: String) = o.list(key).map { JsonObject(it as Map<String, Any?>, key) }

    @Test
    fun `the app's default limits are the ones the golden vectors were written with`() {
        val policy = PhotoSizePolicy(meta.inputWidth, meta.inputHeight)
        assertEquals(policyJson.ints("model"), listOf(policy.modelWidth, policy.modelHeight))
        assertEquals(policyJson.int("max_display_side"), policy.maxDisplaySide)
        assertEquals(policyJson.double("max_decode_pixels"), policy.maxDecodePixels.toDouble(), 0.0)
        assertEquals(policy.maxDisplaySide, Segmenter(meta).sizePolicy.maxDisplaySide)
    }

    @Test
    fun `sample size, decoded and display size match Python on every listed photo`() {
        val policy = PhotoSizePolicy(meta.inputWidth, meta.inputHeight)
        val plans = objects(policyJson, "plans")
        assertTrue(plans.any { size(it.ints("photo")).longSide > 8000 }, "the table must hold photos above 8,000 px")
        for (p in plans) {
            val photo = size(p.ints("photo"))
            val expected = SizePlan(photo, p.int("sample_size"), size(p.ints("decoded")), size(p.ints("display")))
            assertEquals(expected, policy.plan(photo), "photo $photo")
        }
    }

    @Test
    fun `policy bounds memory for any photo size`() {
        val policy = PhotoSizePolicy(256, 256)
        for (w in listOf(1, 255, 256, 4000, 8448, 12_000, 50_000, 100_000)) {
            for (h in listOf(1, 300, 6336, 9000, 100_000)) {
                val plan = policy.plan(Size(w, h))
                assertTrue(plan.decoded.pixels <= policy.maxDecodePixels, "$plan")
                assertTrue(plan.display.longSide <= policy.maxDisplaySide, "$plan")
                assertTrue(Integer.bitCount(plan.sampleSize) == 1, "$plan")
            }
        }
    }

    @Test
    fun `a photo larger than 8000 px decodes small, keeps the model input and shows a bounded mask like Python`() {
        val photo = size(large.ints("photo"))
        assertTrue(photo.longSide > 8000)
        val policy = PhotoSizePolicy(meta.inputWidth, meta.inputHeight)
        val plan = policy.plan(photo)
        assertEquals(large.int("sample_size"), plan.sampleSize)
        assertEquals(size(large.ints("decoded")), plan.decoded)
        // the app's decode of the photo, built from the source case's native pixels as Python builds it
        val source = golden.cases.first { it.name == large.string("source_case") }.rgb("native")
        val decoded = pointSample(source, large.int("repeat"), plan.sampleSize)
        assertEquals(plan.decoded, Size(decoded.width, decoded.height))
        assertEquals(large.string("decoded_sha256"), sha256Hex(decoded.pixels), "decoded pixels differ from Python's")
        assertTrue(plan.decodedArgbBytes * 50 < plan.fullArgbBytes, "decode must be far below a full-size bitmap")

        val files = large.obj("files")
        val expectedInput = GoldenCaseFiles.rgb(golden.file(files.obj("input").string("file")))
        assertTrue(expectedInput.pixels.contentEquals(Preprocessor(meta).resize(decoded).pixels), "model input")
        val prob = GoldenCaseFiles.floats(golden.file(files.obj("prob").string("file")))
        val engine = ExactInputEngine(expectedInput.pixels, prob)
        val result = Segmenter(meta).segment(decoded, engine, photo)
        assertEquals(1, engine.calls)
        assertEquals(size(large.ints("display")), result.display)
        assertEquals(photo, result.photo)
        val expectedMask = GoldenCaseFiles.mask(golden.file(files.obj("display_mask").string("file")))
        val differ = expectedMask.indices.count { expectedMask[it] != result.mask[it] }
        assertEquals(0, differ, "display mask differs in $differ pixels")
        assertEquals(large.int("display_lesion_pixels"), result.area.pixels)
        assertEquals(large.double("display_lesion_percent"), result.area.percent, 0.0)
        assertEquals(large.string("overlay_sha256"), sha256Hex(result.overlay().pixels), "overlay")
    }

    @Test
    fun `a decode above the display side is shown resized to it, mask at that size`() {
        // a 16000x500 panorama keeps its full width (halving would put its height below 256): shown at 2048x64
        val policy = PhotoSizePolicy(256, 256)
        val plan = policy.plan(Size(16_000, 500))
        assertEquals(1, plan.sampleSize)
        assertEquals(Size(2048, 64), plan.display)
        val small = PhotoSizePolicy(256, 256, maxDisplaySide = 300, maxDecodePixels = 300L * 300)
        val case = golden.cases.first { it.name.startsWith("shrink_") } // 640x480
        val prob = case.floats("prob")
        val expectedInput = case.rgb("input").pixels
        val result = Segmenter(
            meta,
            sizePolicy = small,
        ).segment(case.rgb("native"), ExactInputEngine(expectedInput, prob))
        assertEquals(Size(300, 225), result.display)
        assertEquals(300 * 225, result.mask.size)
        val expected = Postprocess.binarize(
            Postprocess.probabilityAt(prob, 256, 256, 300, 225),
            meta.contract.threshold,
        )
        assertTrue(expected.contentEquals(result.mask))
        assertTrue(PilBilinear.resize(case.rgb("native"), 300, 225).pixels.contentEquals(result.image.pixels))
    }

    /** An engine that returns [prob] only for exactly the uint8 tensor [expected] (the contract's input). */
    private class ExactInputEngine(private val expected: ByteArray, private val prob: FloatArray) : InferenceEngine {
        var calls = 0
        override val description = "replay of PyTorch probabilities"

        override fun run(input: ModelInput): FloatArray {
            calls++
            assertTrue(expected.contentEquals(input.bytes!!), "the model would receive other bytes")
            return prob
        }

        override fun close() {}
    }

    companion object {
        /**
         * What a sampling decoder keeps at sample size [s] of [native] enlarged [repeat] times per axis by pixel
         * repetition: pixels s/2, s/2 + s, ... (Skia's sampled PNG decoding), as `export/golden.py`'s
         * `point_sample` builds it, without the full-size photo.
         */
        fun pointSample(native: RgbImage, repeat: Int, s: Int): RgbImage {
            val full = Size(native.width * repeat, native.height * repeat)
            val d = PhotoSizePolicy.sampled(full, s)
            val out = ByteArray(d.width * d.height * 3)
            for (y in 0 until d.height) {
                val sy = minOf(s / 2 + y * s, full.height - 1) / repeat
                for (x in 0 until d.width) {
                    val sx = minOf(s / 2 + x * s, full.width - 1) / repeat
                    for (c in 0 until 3) {
                        out[(y * d.width + x) * 3 + c] =
                            native.pixels[(sy * native.width + sx) * 3 + c]
                    }
                }
            }
            return RgbImage(d.width, d.height, out)
        }
    }
}
