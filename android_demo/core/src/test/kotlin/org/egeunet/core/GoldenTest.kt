package org.egeunet.core

import kotlin.math.abs
import kotlin.test.assertEquals
import kotlin.test.assertTrue
import org.junit.Test

/**
 * The core against the Python contract, on real ISIC images and edge cases (golden vectors from `egeunet golden`):
 * the tensors the model receives agree within 1 LSB, masks and areas are identical on the same probabilities.
 */
class GoldenTest {
    private val golden = GoldenVectors.instance
    private val meta =
        ModelMetadata.parse(
            ModelMetadata.jsonFromModelBytes(golden.file("metadata_sample.tflite").readBytes())!!,
            "metadata_sample.tflite",
        )

    @Test
    fun `golden set has real, shrink, mixed and constant cases`() {
        val names = golden.cases.map { it.name }
        assertTrue(names.count { it.startsWith("isic_") } >= 2, "$names")
        assertTrue(
            names.any {
                it.startsWith("shrink_")
            } && names.any { it.startsWith("mixed_") } && "constant" in names,
            "$names",
        )
        val shrink = golden.cases.first { it.name.startsWith("shrink_") }
        assertTrue(shrink.nativeWidth > 256 && shrink.nativeHeight > 256, "the shrink case must shrink both axes")
    }

    @Test
    fun `decoded golden files are the bytes Python recorded`() {
        for (case in golden.cases) {
            assertEquals(case.sha("native"), sha256Hex(case.rgb("native").pixels), case.name)
            assertEquals(case.sha("input"), sha256Hex(case.rgb("input").pixels), case.name)
            if (case.has("input_f32")) {
                assertEquals(case.sha("input_f32"), sha256Hex(floatsLittleEndian(case.floats("input_f32"))), case.name)
            }
            if (case.withModel) {
                assertEquals(case.sha("prob"), sha256Hex(floatsLittleEndian(case.floats("prob"))), case.name)
                assertEquals(case.sha("mask"), sha256Hex(case.mask("mask")), case.name)
                assertEquals(case.sha("native_mask"), sha256Hex(case.mask("native_mask")), case.name)
            }
        }
    }

    @Test
    fun `resize matches PIL bilinear within 1 LSB on every case`() {
        for (case in golden.cases) {
            val native = case.rgb("native")
            assertEquals(case.nativeWidth to case.nativeHeight, native.width to native.height, case.name)
            val expected = case.rgb("input")
            val actual = Preprocessor(meta).resize(native)
            assertEquals(expected.width to expected.height, actual.width to actual.height, case.name)
            var maxDiff = 0
            var differing = 0
            for (i in expected.pixels.indices) {
                val d = abs((expected.pixels[i].toInt() and 0xFF) - (actual.pixels[i].toInt() and 0xFF))
                if (d > 0) differing++
                if (d > maxDiff) maxDiff = d
            }
            assertTrue(
                maxDiff <= 1,
                "${case.name}: max difference $maxDiff LSB ($differing of ${expected.pixels.size} values differ)",
            )
            val lo = actual.pixels.minOf { it.toInt() and 0xFF }
            val hi = actual.pixels.maxOf { it.toInt() and 0xFF }
            assertEquals(case.json.int("input_min") to case.json.int("input_max"), lo to hi, case.name)
        }
    }

    @Test
    fun `min-max normalisation matches Python's float tensor`() {
        val withFloats = golden.cases.filter { it.has("input_f32") }
        assertTrue(withFloats.size >= 2, "expected a real and the constant case with float tensors")
        for (case in withFloats) {
            val expected = case.floats("input_f32")
            val actual = Preprocessor.minMaxNormalize(case.rgb("input").pixels, meta.contract.valueRange)
            assertEquals(expected.size, actual.size)
            val maxDiff = expected.indices.maxOf { abs(expected[it] - actual[it]) }
            assertTrue(maxDiff <= 1e-4f, "${case.name}: max difference $maxDiff")
        }
        val constant = golden.cases.first { it.name == "constant" }
        assertTrue(constant.floats("input_f32").all { it == 0f }, "a constant image must normalise to zeros, not NaN")
    }

    @Test
    fun `masks, photo-size masks and areas are identical on the same probabilities`() {
        val threshold = meta.contract.threshold
        val cases = golden.cases.filter { it.withModel }
        assertTrue(cases.size >= 4, "expected probabilities for the real, shrink and mixed cases")
        for (case in cases) {
            val prob = case.floats("prob")
            val mask = Postprocess.binarize(prob, threshold)
            assertTrue(case.mask("mask").contentEquals(mask), "${case.name}: model-size mask differs")
            val native =
                Postprocess.binarize(
                    Postprocess.probabilityAt(
                        prob,
                        meta.inputWidth,
                        meta.inputHeight,
                        case.nativeWidth,
                        case.nativeHeight,
                    ),
                    threshold,
                )
            val expected = case.mask("native_mask")
            val differ = expected.indices.count { expected[it] != native[it] }
            assertEquals(0, differ, "${case.name}: photo-size mask differs in $differ pixels")
            val area = Postprocess.area(native)
            assertEquals(case.json.int("native_lesion_pixels"), area.pixels, case.name)
            assertEquals(case.json.double("native_lesion_percent"), area.percent, 0.0, case.name)
            val modelArea = Postprocess.area(mask)
            assertEquals(case.json.int("lesion_pixels"), modelArea.pixels, case.name)
            assertEquals(case.json.double("lesion_percent"), modelArea.percent, 0.0, case.name)
        }
    }

    @Test
    fun `overlay is the same picture as egeunet predict draws`() {
        for (case in golden.cases.filter { it.withModel }) {
            val look = case.json.obj("overlay")
            val rgb = look.ints("rgb")
            assertEquals(
                Postprocess.OVERLAY_COLOR,
                Rgb(rgb[0], rgb[1], rgb[2]),
                "overlay colour drifted from model/predict.py",
            )
            assertEquals(
                Postprocess.OVERLAY_ALPHA,
                look.double("alpha"),
                0.0,
                "overlay alpha drifted from model/predict.py",
            )
            val overlay = Postprocess.overlay(case.rgb("native"), case.mask("native_mask"))
            assertEquals(
                look.string("sha256"),
                sha256Hex(overlay.pixels),
                "${case.name}: overlay pixels differ from Python's",
            )
        }
    }

    @Test
    fun `the golden set was written under the contract the metadata carries`() {
        assertEquals(golden.manifest.string("contract_sha256"), meta.contract.fingerprint())
        val contract = Contract.fromJson(golden.manifest.obj("contract"))
        assertEquals(meta.contract.fingerprint(), contract.fingerprint())
    }
}
