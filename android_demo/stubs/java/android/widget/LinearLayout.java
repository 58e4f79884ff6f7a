// STUB for type-checking only (android_demo/stubs/README.md): signatures copied from the public API, bodies throw.
package android.widget;

import android.view.View;

/** Flattened: the real chain is LinearLayout -> ViewGroup -> View. */
public class LinearLayout extends View {
}
