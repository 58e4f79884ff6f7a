package org.egeunet.demo

import android.os.Build
import java.nio.ByteBuffer
import java.nio.ByteOrder
import org.egeunet.core.ContractException
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

/** Where the model runs. CPU uses LiteRT's XNNPACK kernels with a chosen thread count. */
enum class Accelerator(val label: String) {
    CPU("CPU (XNNPACK)"),
    GPU("GPU delegate"),
    NNAPI("NNAPI delegate"),
    ;

    companion object {
        /** NNAPI delegates exist from Android 8.1 (API 27); before that the interpreter would silently run on CPU. */
        const val NNAPI_MIN_SDK = 27

        fun gpuAvailable(): Boolean = try {
            val compat = CompatibilityList()
            try {
                compat.isDelegateSupportedOnThisDevice
            } finally {
                compat.close()
            }
        } catch (e: Throwable) {
            false // no GPU delegate library in the APK, or no OpenCL/OpenGL driver
        }

        fun nnapiAvailable(): Boolean = Build.VERSION.SDK_INT >= NNAPI_MIN_SDK
    }
}

/**
 * The LiteRT (TensorFlow Lite) interpreter behind the core's [InferenceEngine] interface.
 *
 * Checks the graph against the metadata before the first run (dtype and shape of input and output), so a model
 * that does not match its own contract fails with both shapes in the message instead of returning noise.
 */
class LiteRtEngine(model: ByteArray, private val meta: ModelMetadata, val accelerator: Accelerator, val threads: Int) :
    InferenceEngine {
    private val modelBuffer: ByteBuffer =
        ByteBuffer.allocateDirect(model.size).order(ByteOrder.nativeOrder()).put(model)
    private val delegate: Delegate?
    private val interpreter: Interpreter
    private val input: ByteBuffer
    private val output: ByteBuffer
    private val outputValues: Int

    override val description: String = describe(accelerator, threads)

    init {
        modelBuffer.rewind()
        val options = Interpreter.Options().setNumThreads(threads)
        delegate = createDelegate(accelerator)
        if (delegate != null) options.addDelegate(delegate) else options.setUseXNNPACK(true)
        interpreter =
            try {
                Interpreter(modelBuffer, options)
            } catch (e: RuntimeException) {
                (delegate as? AutoCloseable)?.close()
                throw e
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

    private companion object {
        fun describe(accelerator: Accelerator, threads: Int): String = when (accelerator) {
            Accelerator.CPU -> "${accelerator.label}, $threads thread${if (threads == 1) "" else "s"}"
            else -> accelerator.label
        }

        fun createDelegate(accelerator: Accelerator): Delegate? = when (accelerator) {
            Accelerator.CPU -> null

            Accelerator.GPU -> gpuDelegate()

            Accelerator.NNAPI -> {
                if (!Accelerator.nnapiAvailable()) {
                    val sdk = Build.VERSION.SDK_INT
                    throw UnsupportedOperationException(
                        "NNAPI needs API ${Accelerator.NNAPI_MIN_SDK}, this is API $sdk",
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
