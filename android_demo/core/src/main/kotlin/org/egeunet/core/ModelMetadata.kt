package org.egeunet.core

import java.io.ByteArrayInputStream
import java.security.MessageDigest
import java.util.zip.ZipInputStream

/** A model or contract the app cannot use as it is; the message names the field and what was expected. */
class ContractException(message: String) : IllegalArgumentException(message)

/**
 * The preprocessing contract, read from the exported model (never typed into Kotlin).
 *
 * Mirrors `egeunet_deploy.model.contract.PreprocessContract`. The app implements the operations this class accepts
 * (PIL bilinear resize, per-image min-max, threshold with >=) and refuses any other value by name, so a model
 * exported under a different contract fails loudly instead of segmenting wrongly.
 */
data class Contract(
    val version: Int,
    val inputHeight: Int,
    val inputWidth: Int,
    val channelOrder: String,
    val inputDtype: String,
    val resize: String,
    val normalization: String,
    val valueRange: Pair<Double, Double>,
    val threshold: Double,
    val thresholdRule: String,
    /** The contract as parsed, kept to recompute the Python fingerprint. */
    val raw: Map<String, Any?>,
) {
    /** sha256 of Python's `json.dumps(contract.to_dict(), sort_keys=True)`: equal iff Python's fingerprint is. */
    fun fingerprint(): String = sha256Hex(Json.dumpsSorted(raw).toByteArray(Charsets.UTF_8))

    companion object {
        const val SUPPORTED_VERSION = 1

        fun fromJson(o: JsonObject): Contract {
            val range = o.doubles("value_range")
            if (range.size != 2) throw ContractException("contract.value_range must hold 2 numbers, got $range")
            val c =
                Contract(
                    version = o.int("version"),
                    inputHeight = o.int("input_height"),
                    inputWidth = o.int("input_width"),
                    channelOrder = o.string("channel_order"),
                    inputDtype = o.string("input_dtype"),
                    resize = o.string("resize"),
                    normalization = o.string("normalization"),
                    valueRange = range[0] to range[1],
                    threshold = o.double("threshold"),
                    thresholdRule = o.string("threshold_rule"),
                    raw = o.raw,
                )
            c.validate()
            return c
        }
    }

    private fun validate() {
        fun require(ok: Boolean, what: () -> String) {
            if (!ok) throw ContractException("unsupported contract: ${what()}")
        }
        require(version == SUPPORTED_VERSION) { "version $version (this app implements version $SUPPORTED_VERSION)" }
        require(inputHeight > 0 && inputWidth > 0) { "input size ${inputWidth}x$inputHeight" }
        require(channelOrder == "RGB") { "channel_order '$channelOrder' (this app feeds RGB)" }
        require(inputDtype == "uint8") { "input_dtype '$inputDtype' (this app resizes 8-bit images)" }
        require(resize.startsWith("PIL bilinear")) { "resize '$resize' (this app implements PIL bilinear)" }
        require(normalization == "per_image_minmax") {
            "normalization '$normalization' (this app implements per_image_minmax)"
        }
        require(thresholdRule.contains(">=")) {
            "threshold_rule '$thresholdRule' (this app implements probability >= threshold)"
        }
        require(threshold > 0.0 && threshold < 1.0) { "threshold $threshold" }
    }
}

/**
 * One tensor of the exported graph as the metadata describes it. A symbolic dimension (a dynamic batch, written
 * by the exporter as a name such as "batch") is -1 in [shape]; the app always runs batches of one.
 */
data class TensorSpec(val name: String, val shape: List<Int>, val dtype: String, val layout: String) {
    /** [shape] with symbolic dimensions set to 1: what the app feeds. */
    val concreteShape: List<Int> get() = shape.map { if (it < 0) 1 else it }

    val isDynamic: Boolean get() = shape.any { it < 0 }
}

/**
 * The `egeunet_deploy.json` record an export writes into (or beside) the model: see `export/metadata.py`.
 *
 * [preprocessingInGraph] true: the graph takes the contract's uint8 image and normalises it itself, so the app only
 * resizes; false: the app also applies the per-image min-max and feeds float32.
 */
data class ModelMetadata(
    val format: String,
    val precision: String,
    val modelVersion: String,
    val contract: Contract,
    val contractSha256: String,
    val preprocessingInGraph: Boolean,
    val input: TensorSpec,
    val output: TensorSpec,
) {
    val inputHeight get() = contract.inputHeight
    val inputWidth get() = contract.inputWidth

    companion object {
        const val METADATA_KEY = "egeunet_deploy"
        const val ASSOCIATED_FILE = "egeunet_deploy.json"
        private val LAYOUTS = setOf("NHWC", "NCHW")
        private val INPUT_DTYPES = setOf("uint8", "float32")

        /** Parse and check a metadata JSON text; every error message starts with [where] (its source). */
        fun parse(json: String, where: String = ASSOCIATED_FILE): ModelMetadata {
            fun located(e: IllegalArgumentException): ContractException {
                val msg = e.message ?: "unreadable metadata"
                return ContractException(if (msg.startsWith(where)) msg else "$where: $msg")
            }
            return try {
                fromJson(JsonObject.parse(json, where))
            } catch (e: JsonException) {
                throw located(e)
            } catch (e: ContractException) {
                throw located(e)
            }
        }

        private fun tensor(o: JsonObject): TensorSpec {
            val spec = TensorSpec(o.string("name"), o.dims("shape"), o.string("dtype"), o.string("layout"))
            val known = LAYOUTS.joinToString()
            if (spec.layout !in LAYOUTS) throw ContractException("unsupported layout '${spec.layout}' (known: $known)")
            return spec
        }

        private fun fromJson(o: JsonObject): ModelMetadata {
            val schema = o.int("schema")
            if (schema != 1) throw ContractException("metadata schema $schema is not supported (this app reads 1)")
            val contract = Contract.fromJson(o.obj("contract"))
            val sha = o.string("contract_sha256")
            val actual = contract.fingerprint()
            if (sha != actual) {
                throw ContractException(
                    "contract_sha256 $sha does not match the contract it describes ($actual): edited by hand?",
                )
            }
            val meta =
                ModelMetadata(
                    format = o.string("format"),
                    precision = o.string("precision"),
                    modelVersion = o.string("model_version"),
                    contract = contract,
                    contractSha256 = sha,
                    preprocessingInGraph = o.boolean("preprocessing_in_graph"),
                    input = tensor(o.obj("input")),
                    output = tensor(o.obj("output")),
                )
            meta.validate()
            return meta
        }

        /**
         * The metadata of a model: the record embedded in [model] if it has one, else the contract JSON shipped
         * beside it ([sidecar] returns its text, or null when there is none). Errors name the model and the file.
         */
        fun forModel(model: ByteArray, modelName: String, sidecarName: String, sidecar: () -> String?): ModelMetadata {
            jsonFromModelBytes(model)?.let { return parse(it, "$modelName ($ASSOCIATED_FILE)") }
            val json =
                sidecar() ?: throw ContractException(
                    "$modelName carries no $ASSOCIATED_FILE metadata and no $sidecarName ships beside it: " +
                        "export the model with `egeunet export`, or add the contract JSON the export wrote",
                )
            return parse(json, sidecarName)
        }

        /**
         * The metadata JSON inside a TFLite model: the zip that `append_tflite_metadata` appends to the flatbuffer.
         * Returns null when the bytes carry no such zip (a model exported elsewhere), so the caller can fall back to
         * a contract JSON shipped beside the model.
         */
        fun jsonFromModelBytes(model: ByteArray): String? {
            val zipStart = appendedZipStart(model) ?: return null
            ZipInputStream(ByteArrayInputStream(model, zipStart, model.size - zipStart)).use { zip ->
                while (true) {
                    val entry = zip.nextEntry ?: return null
                    if (entry.name == ASSOCIATED_FILE) return zip.readBytes().toString(Charsets.UTF_8)
                }
            }
        }

        /** Start of a zip appended to other bytes, from its end-of-central-directory record; null if none. */
        internal fun appendedZipStart(bytes: ByteArray): Int? {
            val eocdSize = 22
            if (bytes.size < eocdSize) return null
            val lowest = maxOf(0, bytes.size - eocdSize - 0xFFFF)
            var pos = bytes.size - eocdSize
            while (pos >= lowest) {
                if (le32(bytes, pos) == 0x06054b50L) {
                    val cdSize = le32(bytes, pos + 12)
                    val cdOffset = le32(bytes, pos + 16)
                    val start = pos - cdSize - cdOffset
                    val inside = start >= 0 && start + 4 <= bytes.size
                    if (inside && le32(bytes, start.toInt()) == 0x04034b50L) return start.toInt()
                }
                pos--
            }
            return null
        }

        private fun le32(b: ByteArray, at: Int): Long =
            (b[at].toLong() and 0xFF) or ((b[at + 1].toLong() and 0xFF) shl 8) or
                ((b[at + 2].toLong() and 0xFF) shl 16) or ((b[at + 3].toLong() and 0xFF) shl 24)
    }

    private fun validate() {
        val h = contract.inputHeight
        val w = contract.inputWidth
        val expectedIn = if (input.layout == "NHWC") listOf(1, h, w, 3) else listOf(1, 3, h, w)
        if (input.concreteShape != expectedIn) {
            throw ContractException(
                "input shape ${input.shape} does not match the contract's ${input.layout} $expectedIn",
            )
        }
        val dtypes = INPUT_DTYPES.joinToString()
        if (input.dtype !in INPUT_DTYPES) throw ContractException("input dtype '${input.dtype}' (app feeds $dtypes)")
        if (!preprocessingInGraph && input.dtype != "float32") {
            throw ContractException(
                "a graph without baked preprocessing needs float32 input, metadata says '${input.dtype}'",
            )
        }
        if (output.concreteShape.fold(1) { a, b -> a * b } != h * w) {
            throw ContractException("output shape ${output.shape} is not one ${h}x$w probability map")
        }
        if (output.dtype != "float32") {
            throw ContractException("output dtype '${output.dtype}' (this app reads float32 probabilities)")
        }
    }
}

internal fun sha256Hex(bytes: ByteArray): String {
    val digest = MessageDigest.getInstance("SHA-256").digest(bytes)
    return digest.joinToString("") { "%02x".format(it) }
}
