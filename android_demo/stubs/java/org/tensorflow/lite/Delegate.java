// STUB for type-checking only (android_demo/stubs/README.md): signatures copied from the public API, bodies throw.
package org.tensorflow.lite;

public interface Delegate {
    long getNativeHandle();
}
