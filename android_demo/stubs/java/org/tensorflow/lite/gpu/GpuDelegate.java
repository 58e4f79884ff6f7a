// STUB for type-checking only (android_demo/stubs/README.md): signatures copied from the public API, bodies throw.
package org.tensorflow.lite.gpu;

import java.io.Closeable;
import org.tensorflow.lite.Delegate;

/** From com.google.ai.edge.litert:litert-gpu. */
public class GpuDelegate implements Delegate, Closeable {
    /** Deprecated alias kept by LiteRT; CompatibilityList still returns it. */
    @Deprecated
    public static final class Options extends GpuDelegateFactory.Options {
        public Options() { throw new RuntimeException("Stub!"); }
    }

    public GpuDelegate(GpuDelegateFactory.Options options) { throw new RuntimeException("Stub!"); }

    public GpuDelegate() { throw new RuntimeException("Stub!"); }

    public long getNativeHandle() { throw new RuntimeException("Stub!"); }

    public void close() { throw new RuntimeException("Stub!"); }
}
