package org.egeunet.core

/**
 * The model runtime as the core sees it. The app implements it with the LiteRT interpreter (CPU threads, GPU
 * delegate, NNAPI); the core never touches the runtime, so everything around it runs in JVM unit tests.
 */
interface InferenceEngine : AutoCloseable {
    /** What actually runs, e.g. "CPU (XNNPACK) x4 threads" or "GPU delegate": shown with every timing. */
    val description: String

    /** Run the model once; return the probability map, row-major, model height x width. */
    fun run(input: ModelInput): FloatArray
}

/** One segmented photo: masks at model and photo size, areas, and where the time went. */
class Segmentation(
    val image: RgbImage,
    /** The tensor the model received (kept so the benchmark can re-run the same input). */
    val input: ModelInput,
    val probability: FloatArray,
    val modelMask: ByteArray,
    val mask: ByteArray,
    val area: LesionArea,
    val modelArea: LesionArea,
    val preprocessMs: Double,
    val inferenceMs: Double,
    val postprocessMs: Double,
    val engine: String,
) {
    /** The photo with the lesion tinted and outlined (computed on demand: it costs a full-size copy). */
    fun overlay(): RgbImage = Postprocess.overlay(image, mask)
}

/** Photo in, [Segmentation] out, following the model's contract; the clock is injected for tests. */
class Segmenter(val metadata: ModelMetadata, private val nanoClock: () -> Long = System::nanoTime) {
    private val preprocessor = Preprocessor(metadata)

    fun prepare(image: RgbImage): ModelInput = preprocessor.prepare(image)

    fun segment(image: RgbImage, engine: InferenceEngine): Segmentation {
        val t0 = nanoClock()
        val input = preprocessor.prepare(image)
        val t1 = nanoClock()
        val prob = engine.run(input)
        val t2 = nanoClock()
        val h = metadata.inputHeight
        val w = metadata.inputWidth
        if (prob.size != h * w) {
            throw ContractException("the model returned ${prob.size} values, expected a ${w}x$h probability map")
        }
        val threshold = metadata.contract.threshold
        val modelMask = Postprocess.binarize(prob, threshold)
        val mask = Postprocess.binarize(Postprocess.probabilityAt(prob, w, h, image.width, image.height), threshold)
        val t3 = nanoClock()
        return Segmentation(
            image = image,
            input = input,
            probability = prob,
            modelMask = modelMask,
            mask = mask,
            area = Postprocess.area(mask),
            modelArea = Postprocess.area(modelMask),
            preprocessMs = (t1 - t0) / 1e6,
            inferenceMs = (t2 - t1) / 1e6,
            postprocessMs = (t3 - t2) / 1e6,
            engine = engine.description,
        )
    }
}
