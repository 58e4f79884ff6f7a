// STUB for type-checking only (android_demo/stubs/README.md): signatures copied from the public API, bodies throw.
package androidx.core.view;

import androidx.core.graphics.Insets;

public class WindowInsetsCompat {
    public static final WindowInsetsCompat CONSUMED = null;

    public static final class Type {
        public static int systemBars() { throw new RuntimeException("Stub!"); }

        public static int displayCutout() { throw new RuntimeException("Stub!"); }
    }

    public Insets getInsets(int typeMask) { throw new RuntimeException("Stub!"); }
}
