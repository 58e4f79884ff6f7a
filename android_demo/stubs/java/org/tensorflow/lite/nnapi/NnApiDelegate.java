// STUB for type-checking only (android_demo/stubs/README.md): signatures copied from the public API, bodies throw.
package org.tensorflow.lite.nnapi;

import org.tensorflow.lite.Delegate;

/** From com.google.ai.edge.litert:litert. */
public class NnApiDelegate implements Delegate, AutoCloseable {
    public NnApiDelegate() { throw new RuntimeException("Stub!"); }

    public long getNativeHandle() { throw new RuntimeException("Stub!"); }

    public void close() { throw new RuntimeException("Stub!"); }
}
