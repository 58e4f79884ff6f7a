// STUB for type-checking only (android_demo/stubs/README.md): signatures copied from the public API, bodies throw.
package org.tensorflow.lite.gpu;

/** From com.google.ai.edge.litert:litert-gpu. */
public class CompatibilityList {
    public CompatibilityList() { throw new RuntimeException("Stub!"); }

    public boolean isDelegateSupportedOnThisDevice() { throw new RuntimeException("Stub!"); }

    public GpuDelegate.Options getBestOptionsForThisDevice() { throw new RuntimeException("Stub!"); }

    public void close() { throw new RuntimeException("Stub!"); }
}
