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

/**
 * One segmented photo: masks at model and display size, areas, and where the time went. [image] is the photo at
 * its display size ([PhotoSizePolicy.displaySize] of the decoded image), [photo] the size the photo has at full
 * resolution (before the decoder's subsampling).
 */
class Segmentation(
    val image: RgbImage,
    val photo: Size,
    val decoded: Size,
    /** The tensor the model received (kept so the benchmark can re-run the same input). */
    val input: ModelInput,
    val probability: FloatArray,
    val modelMask: ByteArray,
    /** The mask at [image]'s (display) size. */
    val mask: ByteArray,
    /** Area of [mask]: its percentage is the photo's, its pixel count is at display size. */
    val area: LesionArea,
    val modelArea: LesionArea,
    val preprocessMs: Double,
    val inferenceMs: Double,
    val postprocessMs: Double,
    val engine: String,
) {
    val display: Size get() = Size(image.width, image.height)

    /** The photo with the lesion tinted and outlined, at display size (a copy of [image]). */
    fun overlay(): RgbImage = Postprocess.overlay(image, mask)
}

/** Photo in, [Segmentation] out, following the model's contract; the clock is injected for tests. */
class Segmenter(
    val metadata: ModelMetadata,
    private val nanoClock: () -> Long = System::nanoTime,
    val sizePolicy: PhotoSizePolicy = PhotoSizePolicy(metadata.inputWidth, metadata.inputHeight),
) {
    private val preprocessor = Preprocessor(metadata)

    fun prepare(image: RgbImage): ModelInput = preprocessor.prepare(image)

    /**
     * Segment [image], the photo as decoded (possibly subsampled by [PhotoSizePolicy.sampleSize] from a photo of
     * size [photo]): the model gets the contract's resize of it, the mask and overlay are made at the policy's
     * display size (the decoded size unless that exceeds [PhotoSizePolicy.maxDisplaySide]).
     */
    fun segment(image: RgbImage, engine: InferenceEngine, photo: Size = Size(image.width, image.height)): Segmentation {
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
        val decoded = Size(image.width, image.height)
        val display = sizePolicy.displaySize(decoded)
        val shown = if (display == decoded) image else PilBilinear.resize(image, display.width, display.height)
        val mask = Postprocess.binarize(Postprocess.probabilityAt(prob, w, h, display.width, display.height), threshold)
        val t3 = nanoClock()
        return Segmentation(
            image = shown,
            photo = photo,
            decoded = decoded,
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
