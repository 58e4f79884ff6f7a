// STUB for type-checking only (android_demo/stubs/README.md): signatures copied from the public API, bodies throw.
package android.graphics;

public final class Rect {
    public Rect() { throw new RuntimeException("Stub!"); }
}
