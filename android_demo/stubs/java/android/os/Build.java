// STUB for type-checking only (android_demo/stubs/README.md): signatures copied from the public API, bodies throw.
package android.os;

public class Build {
    public static final String MODEL = null;

    public static class VERSION {
        public static final int SDK_INT = 0;
    }
}
