// STUB for type-checking only (android_demo/stubs/README.md): signatures copied from the public API, bodies throw.
package org.tensorflow.lite;

import java.nio.ByteBuffer;

/** Flattened: the real class extends InterpreterImpl and implements InterpreterApi. */
public final class Interpreter implements AutoCloseable {
    public static class Options {
        public Options() { throw new RuntimeException("Stub!"); }

        public Options setNumThreads(int numThreads) { throw new RuntimeException("Stub!"); }

        public Options setUseXNNPACK(boolean useXNNPACK) { throw new RuntimeException("Stub!"); }

        public Options addDelegate(Delegate delegate) { throw new RuntimeException("Stub!"); }
    }

    public Interpreter(ByteBuffer byteBuffer, Options options) { throw new RuntimeException("Stub!"); }

    public void run(Object input, Object output) { throw new RuntimeException("Stub!"); }

    public void resizeInput(int idx, int[] dims) { throw new RuntimeException("Stub!"); }

    public void allocateTensors() { throw new RuntimeException("Stub!"); }

    public Tensor getInputTensor(int inputIndex) { throw new RuntimeException("Stub!"); }

    public Tensor getOutputTensor(int outputIndex) { throw new RuntimeException("Stub!"); }

    public void close() { throw new RuntimeException("Stub!"); }
}
