package org.egeunet.core

/** The tensor handed to the interpreter: exactly one of [bytes] (uint8 graphs) or [floats] (float32 graphs). */
class ModelInput(
    val shape: List<Int>,
    val layout: String,
    val bytes: ByteArray? = null,
    val floats: FloatArray? = null,
) {
    init {
        require((bytes == null) != (floats == null)) { "a model input holds either bytes or floats" }
        val n = shape.fold(1) { a, b -> a * b }
        require((bytes?.size ?: floats!!.size) == n) { "input of shape $shape needs $n values" }
    }

    val dtype: String get() = if (bytes != null) "uint8" else "float32"
}

/**
 * Contract steps 2-3 on the phone: resize the decoded photo to the model's size, then either hand the uint8 image
 * to a graph that normalises itself, or apply the per-image min-max here for a bare graph. Layout and dtype come
 * from the model's metadata.
 */
class Preprocessor(private val meta: ModelMetadata) {
    /** Step 2: the uint8 RGB image the model must receive (PIL bilinear to the contract's size). */
    fun resize(native: RgbImage): RgbImage =
        PilBilinear.resize(native, meta.contract.inputWidth, meta.contract.inputHeight)

    /** Steps 2 and 3 as this model needs them. */
    fun prepare(native: RgbImage): ModelInput = fromResized(resize(native))

    /** Step 3 (if the graph does not do it) and layout, for an image already at the model's size. */
    fun fromResized(resized: RgbImage): ModelInput {
        require(resized.width == meta.inputWidth && resized.height == meta.inputHeight) {
            "expected a ${meta.inputWidth}x${meta.inputHeight} image, got ${resized.width}x${resized.height}"
        }
        val layout = meta.input.layout
        return when {
            meta.input.dtype == "uint8" -> ModelInput(
                meta.input.concreteShape,
                layout,
                bytes = hwcToLayout(resized.pixels, resized, layout),
            )

            meta.preprocessingInGraph -> {
                val raw = FloatArray(resized.pixels.size) { (resized.pixels[it].toInt() and 0xFF).toFloat() }
                ModelInput(meta.input.concreteShape, layout, floats = hwcToLayout(raw, resized, layout))
            }

            else -> {
                val normalized = minMaxNormalize(resized.pixels, meta.contract.valueRange)
                ModelInput(meta.input.concreteShape, layout, floats = hwcToLayout(normalized, resized, layout))
            }
        }
    }

    companion object {
        /**
         * The contract's per-image min-max over all pixels and channels, in float32 exactly as Python's
         * `minmax_normalize`: `(x - min) * (span / max(max - min, 1))`; a constant image becomes all zeros.
         */
        fun minMaxNormalize(pixels: ByteArray, valueRange: Pair<Double, Double> = 0.0 to 255.0): FloatArray {
            var lo = 255
            var hi = 0
            for (b in pixels) {
                val v = b.toInt() and 0xFF
                if (v < lo) lo = v
                if (v > hi) hi = v
            }
            val span = (valueRange.second - valueRange.first).toFloat()
            val scale = span / maxOf(hi - lo, 1).toFloat()
            val offset = valueRange.first.toFloat()
            return FloatArray(pixels.size) { ((pixels[it].toInt() and 0xFF) - lo).toFloat() * scale + offset }
        }

        /** Interleaved H x W x 3 -> the graph's layout (NHWC: unchanged; NCHW: channel planes). */
        fun hwcToLayout(hwc: ByteArray, size: RgbImage, layout: String): ByteArray {
            if (layout == "NHWC") return hwc.copyOf()
            val plane = size.width * size.height
            return ByteArray(hwc.size) { hwc[(it % plane) * 3 + it / plane] }
        }

        fun hwcToLayout(hwc: FloatArray, size: RgbImage, layout: String): FloatArray {
            if (layout == "NHWC") return hwc
            val plane = size.width * size.height
            return FloatArray(hwc.size) { hwc[(it % plane) * 3 + it / plane] }
        }
    }
}
