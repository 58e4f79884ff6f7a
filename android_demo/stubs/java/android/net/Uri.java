// STUB for type-checking only (android_demo/stubs/README.md): signatures copied from the public API, bodies throw.
package android.net;

public abstract class Uri implements android.os.Parcelable, Comparable<Uri> {
    public static Uri parse(String uriString) { throw new RuntimeException("Stub!"); }

    public abstract String toString();
}
