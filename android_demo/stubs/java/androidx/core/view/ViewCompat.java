// STUB for type-checking only (android_demo/stubs/README.md): signatures copied from the public API, bodies throw.
package androidx.core.view;

import android.view.View;

public class ViewCompat {
    public static void setOnApplyWindowInsetsListener(View v, OnApplyWindowInsetsListener listener) {
        throw new RuntimeException("Stub!");
    }
}
