// STUB for type-checking only (android_demo/stubs/README.md): signatures copied from the public API, bodies throw.
package org.tensorflow.lite.gpu;

/** From com.google.ai.edge.litert:litert-gpu-api. */
public class GpuDelegateFactory {
    public static class Options {
        public Options() { throw new RuntimeException("Stub!"); }
    }
}
