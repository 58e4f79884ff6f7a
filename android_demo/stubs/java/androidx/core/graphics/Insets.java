// STUB for type-checking only (android_demo/stubs/README.md): signatures copied from the public API, bodies throw.
package androidx.core.graphics;

public final class Insets {
    public final int left;
    public final int top;
    public final int right;
    public final int bottom;

    private Insets() { throw new RuntimeException("Stub!"); }
}
