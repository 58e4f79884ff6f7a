package org.egeunet.demo

import android.content.res.AssetManager
import android.os.Build
import android.os.Process
import java.io.FileInputStream
import java.io.IOException
import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.nio.MappedByteBuffer
import java.nio.channels.FileChannel
import org.egeunet.core.ContractException
import org.egeunet.core.Delegation
import org.egeunet.core.InferenceEngine
import org.egeunet.core.ModelInput
import org.egeunet.core.ModelMetadata
import org.tensorflow.lite.DataType
import org.tensorflow.lite.Delegate
import org.tensorflow.lite.Interpreter
import org.tensorflow.lite.Tensor
import org.tensorflow.lite.gpu.CompatibilityList
import org.tensorflow.lite.gpu.GpuDelegate
import org.tensorflow.lite.nnapi.NnApiDelegate

/**
 * Where the model runs. CPU uses LiteRT's XNNPACK kernels with a chosen thread count. [logName] is how the
 * delegate names itself in LiteRT's "Replacing N out of M node(s) with delegate (NAME)" log line.
 */
enum class Accelerator(val label: String, val logName: String) {
    CPU("CPU (XNNPACK)", "XNNPack"),
    GPU("GPU delegate", "Gpu"),
    NNAPI("NNAPI delegate", "Nnapi"),
    ;

    companion object {
        /** NNAPI delegates exist from Android 8.1 (API 27); before that the interpreter would silently run on CPU. */
        const val NNAPI_MIN_SDK = 27

        /**
         * NNAPI is deprecated from Android 15 (API 35): vendors stop shipping new drivers for it and its CPU
         * reference path is slower than XNNPACK, so the app offers it on Android 8.1-14 only, where a vendor driver
         * may still run the model on an NPU or DSP (README, "Accelerators").
         */
        const val NNAPI_MAX_SDK = 34

        /** Asks LiteRT's GPU compatibility list; loads the delegate's native code, so call it off the main thread. */
        fun gpuAvailable(): Boolean = try {
            val compat = CompatibilityList()
            try {
                compat.isDelegateSupportedOnThisDevice
            } finally {
                compat.close()
            }
        } catch (e: Exception) {
            false // no GPU delegate library in the APK, or no OpenCL/OpenGL driver
        } catch (e: LinkageError) {
            false // UnsatisfiedLinkError: the delegate's native library does not load on this phone
        }

        fun nnapiAvailable(): Boolean = Build.VERSION.SDK_INT in NNAPI_MIN_SDK..NNAPI_MAX_SDK
    }
}

/**
 * The model file, memory-mapped from the APK (`.tflite` is stored uncompressed, `noCompress` in
 * app/build.gradle.kts), so every engine rebuild shares the same pages instead of copying the model.
 */
object ModelFile {
    fun map(assets: AssetManager, name: String): MappedByteBuffer = assets.openFd(name).use { fd ->
        FileInputStream(fd.fileDescriptor).use {
            it.channel.map(FileChannel.MapMode.READ_ONLY, fd.startOffset, fd.declaredLength)
        }
    }

    /** A copy of the mapped bytes, for the metadata reader (the model is a few hundred KB). */
    fun bytes(model: ByteBuffer): ByteArray {
        val view = model.duplicate()
        view.rewind()
        return ByteArray(view.remaining()).also { view.get(it) }
    }
}

/**
 * The LiteRT (TensorFlow Lite) interpreter behind the core's [InferenceEngine] interface.
 *
 * Checks the graph against the metadata before the first run (dtype and shape of input and output), so a model
 * that does not match its own contract fails with both shapes in the message instead of returning noise.
 */
class LiteRtEngine(
    private val modelBuffer: ByteBuffer,
    private val meta: ModelMetadata,
    val accelerator: Accelerator,
    val threads: Int,
) : InferenceEngine {
    private val delegate: Delegate?
    private val interpreter: Interpreter
    private val input: ByteBuffer
    private val output: ByteBuffer
    private val outputValues: Int

    /** What runs, e.g. "CPU (XNNPACK), 4 threads" or "all 41 ops on the GPU delegate (1 partition)". */
    override val description: String

    init {
        modelBuffer.rewind()
        val options = Interpreter.Options().setNumThreads(threads)
        delegate = createDelegate(accelerator)
        if (delegate != null) options.addDelegate(delegate) else options.setUseXNNPACK(true)
        val logBefore = if (delegate != null) ownLiteRtLog() else null
        interpreter =
            try {
                Interpreter(modelBuffer, options)
            } catch (e: Throwable) {
                (delegate as? AutoCloseable)?.close()
                throw e
            }
        description =
            if (delegate == null) {
                "${accelerator.label}, $threads thread${if (threads == 1) "" else "s"}"
            } else {
                val delegation = Delegation.reportedSince(logBefore, ownLiteRtLog(), accelerator.logName)
                Delegation.ranOn(accelerator.label, delegation) + cpuPart(delegation)
            }
        try {
            val inTensor = checkedInput()
            val outTensor = interpreter.getOutputTensor(0)
            val oneMap = outTensor.numElements() == meta.inputHeight * meta.inputWidth
            if (outTensor.dataType() != DataType.FLOAT32 || !oneMap) {
                val got = "${outTensor.dataType()} ${outTensor.shape().toList()}"
                throw ContractException("the model's output is $got, expected one float32 probability map")
            }
            input = ByteBuffer.allocateDirect(inTensor.numBytes()).order(ByteOrder.nativeOrder())
            output = ByteBuffer.allocateDirect(outTensor.numBytes()).order(ByteOrder.nativeOrder())
            outputValues = outTensor.numElements()
        } catch (e: RuntimeException) {
            close()
            throw e
        }
    }

    /** The input tensor, checked against the metadata (a dynamic batch is resized to 1 first). */
    private fun checkedInput(): Tensor {
        val want = meta.input.concreteShape.toIntArray()
        if (meta.input.isDynamic && !interpreter.getInputTensor(0).shape().contentEquals(want)) {
            interpreter.resizeInput(0, want)
            interpreter.allocateTensors()
        }
        val tensor = interpreter.getInputTensor(0)
        val type = if (meta.input.dtype == "uint8") DataType.UINT8 else DataType.FLOAT32
        if (tensor.dataType() != type || !tensor.shape().contentEquals(want)) {
            val got = "${tensor.dataType()} ${tensor.shape().toList()}"
            throw ContractException(
                "the model's input is $got, its metadata says ${meta.input.dtype} ${meta.input.shape}",
            )
        }
        return tensor
    }

    override fun run(input: ModelInput): FloatArray {
        val buf = this.input
        buf.rewind()
        val bytes = input.bytes
        if (bytes != null) buf.put(bytes) else buf.asFloatBuffer().put(input.floats!!)
        buf.rewind()
        output.rewind()
        interpreter.run(buf, output)
        output.rewind()
        return FloatArray(outputValues).also { output.asFloatBuffer().get(it) }
    }

    override fun close() {
        interpreter.close()
        (delegate as? AutoCloseable)?.close()
    }

    /** The CPU threads matter only for the ops a delegate left to the CPU. */
    private fun cpuPart(d: Delegation?): String {
        val total = d?.total
        val all = d != null && total != null && d.delegated >= total
        return if (all) "" else ", CPU part on $threads thread${if (threads == 1) "" else "s"}"
    }

    private companion object {
        /**
         * This process's LiteRT log lines (tag "tflite"; LiteRT logs how a delegate partitioned the graph on Android
         * in release builds too). An app may read its own log; null when logcat cannot be run.
         */
        fun ownLiteRtLog(): String? = try {
            val p =
                ProcessBuilder("logcat", "-d", "-v", "raw", "-s", "tflite:I", "--pid=${Process.myPid()}")
                    .redirectErrorStream(true)
                    .start()
            val text = p.inputStream.bufferedReader().use { it.readText() }
            p.waitFor()
            text
        } catch (e: IOException) {
            null
        } catch (e: SecurityException) {
            null
        } catch (e: InterruptedException) {
            Thread.currentThread().interrupt()
            null
        }

        fun createDelegate(accelerator: Accelerator): Delegate? = when (accelerator) {
            Accelerator.CPU -> null

            Accelerator.GPU -> gpuDelegate()

            Accelerator.NNAPI -> {
                if (!Accelerator.nnapiAvailable()) {
                    val sdk = Build.VERSION.SDK_INT
                    throw UnsupportedOperationException(
                        "the app offers NNAPI on API ${Accelerator.NNAPI_MIN_SDK}-${Accelerator.NNAPI_MAX_SDK} " +
                            "(deprecated from Android 15), this is API $sdk",
                    )
                }
                NnApiDelegate()
            }
        }

        fun gpuDelegate(): Delegate {
            val compat = CompatibilityList()
            try {
                if (!compat.isDelegateSupportedOnThisDevice) {
                    throw UnsupportedOperationException("the GPU delegate does not support this device")
                }
                return GpuDelegate(compat.bestOptionsForThisDevice)
            } finally {
                compat.close()
            }
        }
    }
}
