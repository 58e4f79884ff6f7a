package org.egeunet.core

import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertNull
import kotlin.test.assertTrue
import org.junit.Test

/** Reading the contract from the exported model: the appended zip, the fingerprint, and refusals by name. */
class ModelMetadataTest {
    private val golden = GoldenVectors.instance
    private val modelBytes = golden.file("metadata_sample.tflite").readBytes()
    private val json = ModelMetadata.jsonFromModelBytes(modelBytes)!!

    private fun refused(text: String, vararg words: String) {
        val e = assertFailsWith<ContractException> { ModelMetadata.parse(text) }
        for (w in words) assertTrue(w in e.message!!, "'$w' not in: ${e.message}")
    }

    @Test
    fun `metadata is read from the zip appended to the flatbuffer`() {
        val flatbufferBytes = golden.manifest.obj("metadata_sample").int("flatbuffer_bytes")
        assertEquals(flatbufferBytes, ModelMetadata.appendedZipStart(modelBytes))
        val meta = ModelMetadata.parse(json)
        assertEquals("tflite", meta.format)
        assertEquals(256, meta.inputHeight)
        assertEquals(0.5, meta.contract.threshold)
        assertEquals(0.0 to 255.0, meta.contract.valueRange)
        assertEquals(golden.manifest.string("contract_sha256"), meta.contractSha256)
    }

    @Test
    fun `a model without appended metadata yields null, not a crash`() {
        assertNull(
            ModelMetadata.jsonFromModelBytes(
                modelBytes.copyOf(golden.manifest.obj("metadata_sample").int("flatbuffer_bytes")),
            ),
        )
        assertNull(ModelMetadata.jsonFromModelBytes(ByteArray(0)))
        assertNull(ModelMetadata.jsonFromModelBytes(ByteArray(100) { 0x50 }))
    }

    @Test
    fun `fingerprint reproduces Python's sha256 of the canonical contract JSON`() {
        val meta = ModelMetadata.parse(json)
        assertEquals(meta.contractSha256, meta.contract.fingerprint())
    }

    @Test
    fun `a hand-edited contract is caught by its fingerprint`() {
        refused(
            json.replace("\"threshold\": 0.5, \"threshold_rule\"", "\"threshold\": 0.4, \"threshold_rule\""),
            "contract_sha256",
        )
    }

    @Test
    fun `unsupported contracts and shapes are refused with the field named`() {
        val meta = ModelMetadata.parse(json)

        // re-sign an edited contract the way Python would, so only the semantic check can object
        fun withContract(edit: (MutableMap<String, Any?>) -> Unit): String {
            @Suppress("UNCHECKED_CAST")
            val root = (Json.parse(json) as Map<String, Any?>).toMutableMap()

            @Suppress("UNCHECKED_CAST")
            val contract = (root["contract"] as Map<String, Any?>).toMutableMap()
            edit(contract)
            root["contract"] = contract
            root["contract_sha256"] = sha256Hex(Json.dumpsSorted(contract).toByteArray())
            return Json.dumpsSorted(root)
        }
        assertEquals(meta, ModelMetadata.parse(withContract { }))
        refused(withContract { it["normalization"] = "imagenet_mean_std" }, "normalization", "imagenet_mean_std")
        refused(withContract { it["version"] = JsonNumber("2") }, "version 2")
        refused(withContract { it["channel_order"] = "BGR" }, "channel_order")
        refused(withContract { it.remove("threshold") }, "missing field 'threshold'")
        refused(json.replace("\"shape\": [1, 256, 256, 3]", "\"shape\": [1, 3, 256, 256]"), "input shape", "NHWC")
        refused(json.replace("\"layout\": \"NHWC\"", "\"layout\": \"HWC\""), "layout 'HWC'")
        refused(json.replace("\"preprocessing_in_graph\": true", "\"preprocessing_in_graph\": false"), "float32 input")
        refused(json.replace("\"schema\": 1", "\"schema\": 7"), "schema 7")
        refused("{\"schema\": 1", "invalid JSON")
        val bgr = withContract { it["channel_order"] = "BGR" }
        val e = assertFailsWith<ContractException> { ModelMetadata.parse(bgr, "x.json") }
        assertTrue(e.message!!.startsWith("x.json: "), "errors must name their source: ${e.message}")
    }

    @Test
    fun `embedded metadata wins, the JSON beside the model is the fallback, neither is an error`() {
        val bare = modelBytes.copyOf(golden.manifest.obj("metadata_sample").int("flatbuffer_bytes"))
        var asked = 0
        val embedded = ModelMetadata.forModel(modelBytes, "m.tflite", "m.json") {
            asked++
            null
        }
        assertEquals(0, asked, "the sidecar must not be read when the model carries its metadata")
        assertEquals(embedded, ModelMetadata.forModel(bare, "m.tflite", "m.json") { json })
        val e = assertFailsWith<ContractException> { ModelMetadata.forModel(bare, "m.tflite", "m.json") { null } }
        assertTrue("m.tflite" in e.message!! && "m.json" in e.message!!, e.message)
    }

    @Test
    fun `a dynamic batch dimension is accepted and fed as one image`() {
        val meta = ModelMetadata.parse(
            json.replace("\"shape\": [1, 256, 256, 3]", "\"shape\": [\"batch\", 256, 256, 3]"),
        )
        assertEquals(listOf(-1, 256, 256, 3), meta.input.shape)
        assertTrue(meta.input.isDynamic)
        assertEquals(listOf(1, 256, 256, 3), meta.input.concreteShape)
        assertEquals(listOf(1, 256, 256, 3), Preprocessor(meta).prepare(RgbImage(2, 2, ByteArray(12))).shape)
        refused(json.replace("\"shape\": [1, 256, 256, 3]", "\"shape\": [2, 256, 256, 3]"), "input shape")
    }
}
