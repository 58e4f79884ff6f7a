// STUB for type-checking only (android_demo/stubs/README.md): signatures copied from the public API, bodies throw.
package androidx.core.view;

import android.view.View;

public interface OnApplyWindowInsetsListener {
    WindowInsetsCompat onApplyWindowInsets(View v, WindowInsetsCompat insets);
}
