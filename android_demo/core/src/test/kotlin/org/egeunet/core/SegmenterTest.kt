package org.egeunet.core

import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertTrue
import org.junit.Test

/**
 * The whole photo-to-mask path of the app, with the interpreter replaced by the probabilities PyTorch produced for
 * the same image (no LiteRT runs on the JVM). The replaying engine refuses any input other than the exact tensor
 * Python fed the model, so this also proves the app hands the runtime the contract's tensor in the metadata's layout.
 */
class SegmenterTest {
    private val golden = GoldenVectors.instance
    private val sampleJson = ModelMetadata.jsonFromModelBytes(golden.file("metadata_sample.tflite").readBytes())!!
    private val baked = ModelMetadata.parse(sampleJson)

    /** The metadata of a `--raw` export: float32 NCHW input, normalised by the app. */
    private val raw =
        ModelMetadata.parse(
            sampleJson
                .replace("\"preprocessing_in_graph\": true", "\"preprocessing_in_graph\": false")
                .replace("\"dtype\": \"uint8\", \"layout\": \"NHWC\"", "\"dtype\": \"float32\", \"layout\": \"NCHW\"")
                .replace("\"shape\": [1, 256, 256, 3]", "\"shape\": [1, 3, 256, 256]"),
        )

    private class ReplayEngine(private val expected: ModelInput, private val prob: FloatArray) : InferenceEngine {
        var calls = 0
        override val description = "replay of PyTorch probabilities"

        override fun run(input: ModelInput): FloatArray {
            calls++
            assertEquals(expected.shape, input.shape)
            assertEquals(expected.layout, input.layout)
            expected.bytes?.let { assertTrue(it.contentEquals(input.bytes!!), "the model would receive other bytes") }
            expected.floats?.let { e ->
                val a = input.floats!!
                assertTrue(
                    e.indices.all {
                        kotlin.math.abs(e[it] - a[it]) <= 1e-4f
                    },
                    "the model would receive other floats",
                )
            }
            return prob
        }

        override fun close() {}
    }

    private fun fakeClock(stepNanos: Long): () -> Long {
        var t = 0L
        return { t.also { t += stepNanos } }
    }

    @Test
    fun `metadata variants parse as the exporter describes them`() {
        assertTrue(baked.preprocessingInGraph)
        assertEquals(TensorSpec("image", listOf(1, 256, 256, 3), "uint8", "NHWC"), baked.input)
        assertTrue(!raw.preprocessingInGraph)
        assertEquals(listOf(1, 3, 256, 256), raw.input.shape)
    }

    @Test
    fun `baked graph gets the uint8 NHWC image and the photo-size mask matches Python`() {
        for (case in golden.cases.filter { it.withModel }) {
            val expectedInput = ModelInput(baked.input.shape, "NHWC", bytes = case.rgb("input").pixels)
            val engine = ReplayEngine(expectedInput, case.floats("prob"))
            val result = Segmenter(baked, fakeClock(1_000_000)).segment(case.rgb("native"), engine)
            assertEquals(1, engine.calls)
            assertTrue(case.mask("native_mask").contentEquals(result.mask), case.name)
            assertTrue(case.mask("mask").contentEquals(result.modelMask), case.name)
            assertEquals(case.json.int("native_lesion_pixels"), result.area.pixels)
            assertEquals(case.json.double("lesion_percent"), result.modelArea.percent, 0.0)
            assertEquals(1.0, result.inferenceMs, 1e-9)
            assertEquals("replay of PyTorch probabilities", result.engine)
        }
    }

    @Test
    fun `bare graph gets the normalised float32 image in NCHW`() {
        val case = golden.cases.first { it.has("input_f32") && it.withModel }
        val hwc = case.floats("input_f32")
        val plane = 256 * 256
        val nchw = FloatArray(hwc.size) { hwc[(it % plane) * 3 + it / plane] }
        val engine = ReplayEngine(ModelInput(raw.input.shape, "NCHW", floats = nchw), case.floats("prob"))
        val result = Segmenter(raw, fakeClock(1)).segment(case.rgb("native"), engine)
        assertTrue(case.mask("native_mask").contentEquals(result.mask))
    }

    @Test
    fun `a model that returns the wrong number of values is refused by name`() {
        val case = golden.cases.first { it.withModel }
        val engine =
            object : InferenceEngine {
                override val description = "broken"

                override fun run(input: ModelInput) = FloatArray(10)

                override fun close() {}
            }
        val e = assertFailsWith<ContractException> { Segmenter(baked).segment(case.rgb("native"), engine) }
        assertTrue("returned 10 values" in e.message!!, e.message)
    }

    @Test
    fun `uint8 layouts transpose to channel planes`() {
        val img = RgbImage(2, 1, byteArrayOf(1, 2, 3, 4, 5, 6))
        assertTrue(byteArrayOf(1, 4, 2, 5, 3, 6).contentEquals(Preprocessor.hwcToLayout(img.pixels, img, "NCHW")))
        assertTrue(img.pixels.contentEquals(Preprocessor.hwcToLayout(img.pixels, img, "NHWC")))
    }
}
