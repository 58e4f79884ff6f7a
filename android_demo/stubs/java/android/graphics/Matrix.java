// STUB for type-checking only (android_demo/stubs/README.md): signatures copied from the public API, bodies throw.
package android.graphics;

public class Matrix {
    public Matrix() { throw new RuntimeException("Stub!"); }

    public boolean postRotate(float degrees) { throw new RuntimeException("Stub!"); }

    public boolean postScale(float sx, float sy) { throw new RuntimeException("Stub!"); }
}
