// STUB for type-checking only (android_demo/stubs/README.md): signatures copied from the public API, bodies throw.
package android.os;

/** Flattened: the real class extends BaseBundle, which declares putString/getString. */
public final class Bundle {
    public Bundle() { throw new RuntimeException("Stub!"); }

    public void putString(String key, String value) { throw new RuntimeException("Stub!"); }

    public String getString(String key) { throw new RuntimeException("Stub!"); }
}
