package org.egeunet.core

import java.io.FileNotFoundException
import java.io.IOException
import kotlin.test.assertEquals
import kotlin.test.assertFalse
import kotlin.test.assertNotNull
import kotlin.test.assertNull
import kotlin.test.assertTrue
import org.junit.Test

/**
 * The messages the app shows when something fails (core `Failures.kt`), the engine fallback that says "using the
 * CPU" only when the CPU engine started, and what a delegate took of the graph, read from LiteRT's log lines.
 */
class FailuresTest {
    private class NamedEngine(override val description: String) : InferenceEngine {
        override fun run(input: ModelInput): FloatArray = error("not run in this test")

        override fun close() {}
    }

    private val cpu = { NamedEngine("CPU (XNNPACK), 4 threads") }

    @Test
    fun `the requested engine starting is reported as ready`() {
        val r = startEngine("GPU delegate", { NamedEngine("GPU delegate") }, cpu)
        assertEquals("Ready: GPU delegate", r.message)
        assertFalse(r.fellBack)
    }

    @Test
    fun `a delegate whose native library is missing falls back to the CPU and says so`() {
        val r =
            startEngine("GPU delegate", { throw UnsatisfiedLinkError("dlopen failed: libOpenCL.so not found") }, cpu)
        assertNotNull(r.engine)
        assertTrue(r.fellBack)
        assertEquals(
            "GPU delegate could not start (native library not loadable: dlopen failed: libOpenCL.so not found); " +
                "using the CPU instead: CPU (XNNPACK), 4 threads",
            r.message,
        )
    }

    @Test
    fun `when the CPU fails too the message does not claim the CPU is used`() {
        val model = ContractException("the model's input is FLOAT32 [1, 3, 256, 256], its metadata says uint8")
        val r = startEngine("NNAPI delegate", { throw IllegalStateException("NNAPI: no devices") }, { throw model })
        assertNull(r.engine)
        assertFalse("using the CPU" in r.message, r.message)
        assertEquals(
            "NNAPI delegate could not start (NNAPI: no devices), and the CPU could not either (${model.message}): " +
                "the model cannot run.",
            r.message,
        )
    }

    @Test
    fun `a failing CPU engine is reported without a fallback`() {
        val r =
            startEngine<NamedEngine>("CPU (XNNPACK)", {
                throw NoClassDefFoundError("org/tensorflow/lite/Interpreter")
            }, null)
        assertNull(r.engine)
        assertEquals(
            "The CPU (XNNPACK) engine could not start (runtime library missing or broken: " +
                "org/tensorflow/lite/Interpreter): the model cannot run.",
            r.message,
        )
    }

    @Test
    fun `photo failures name the photo and what to do`() {
        val uri = "content://media/external/images/media/42"
        assertEquals(
            "No permission to read $uri any more (the app that shared it withdrew access): pick the photo again.",
            Failures.photo(uri, SecurityException("Permission Denial: opening provider")),
        )
        assertEquals(
            "$uri is gone or cannot be opened (No such file): pick the photo again.",
            Failures.photo(uri, FileNotFoundException("No such file\nat line 2")),
        )
        assertEquals(
            "Cannot read $uri: not a decodable image",
            Failures.photo(uri, IOException("not a decodable image")),
        )
        assertEquals(
            "Not enough memory to decode $uri on this phone; try a smaller photo.",
            Failures.photo(uri, OutOfMemoryError()),
        )
        assertEquals("Cannot read $uri: IllegalStateException", Failures.photo(uri, IllegalStateException()))
    }

    @Test
    fun `model and inference failures`() {
        assertEquals(
            "No egeunet.tflite in the app: build it with -Pegeunet.model=FILE (see android_demo/README.md).",
            Failures.model("egeunet.tflite", FileNotFoundException("egeunet.tflite")),
        )
        assertEquals(
            "egeunet.tflite is compressed in the APK and cannot be memory-mapped: keep noCompress += \"tflite\" in " +
                "app/build.gradle.kts.",
            Failures.model(
                "egeunet.tflite",
                FileNotFoundException("This file can not be opened as a file descriptor; it is probably compressed"),
            ),
        )
        assertEquals(
            "This model cannot be used: unsupported contract: version 2",
            Failures.model("egeunet.tflite", ContractException("unsupported contract: version 2")),
        )
        assertEquals(
            "Inference failed: Internal error: failed to run",
            Failures.inference(IllegalArgumentException("Internal error: failed to run")),
        )
        assertTrue(Failures.inference(OutOfMemoryError("Failed to allocate")).startsWith("Not enough memory"))
    }

    @Test
    fun `what a delegate took is read from LiteRT's own log lines`() {
        val before =
            "I tflite  : Replacing 12 out of 12 node(s) with delegate (TfLiteXNNPackDelegate) node, " +
                "yielding 1 partitions for subgraph 0.\n"
        val gpuFull =
            before +
                "I tflite  : Replacing 41 out of 41 node(s) with delegate (TfLiteGpuDelegateV2) node, " +
                "yielding 1 partitions for the whole graph.\n"
        val d = Delegation.reportedSince(before, gpuFull, "Gpu")!!
        assertEquals("all 41 ops on the GPU delegate (1 partition)", d.describe("GPU delegate"))
        val partial =
            "INFO: Replacing 30 out of 41 node(s) with delegate (TfLiteGpuDelegateV2) node, yielding 3 partitions."
        assertEquals(
            "30 of 41 ops on the GPU delegate, 11 on the CPU (3 partitions)",
            Delegation.ranOn("GPU delegate", Delegation.reportedSince("", partial, "Gpu")),
        )
        val old = "Replacing 38 node(s) with delegate (TfLiteNnapiDelegate) node, yielding 2 partitions."
        assertEquals(
            "38 ops on the NNAPI delegate, any others on the CPU (2 partitions)",
            Delegation.ranOn("NNAPI delegate", Delegation.reportedSince("", old, "Nnapi")),
        )
        // nothing new since the engine was built (or no log): said so, not guessed
        assertNull(Delegation.reportedSince(gpuFull, gpuFull, "Gpu"))
        assertNull(Delegation.reportedSince(null, gpuFull, "Gpu"))
        assertEquals(
            "GPU delegate (LiteRT did not report which ops it took; see README, Accelerators)",
            Delegation.ranOn("GPU delegate", null),
        )
        assertNull(Delegation.reportedSince("", before, "Gpu")) // XNNPACK's line is not the GPU's
    }
}
