// STUB for type-checking only (android_demo/stubs/README.md): signatures copied from the public API, bodies throw.
package android.widget;

import android.text.Editable;

public class EditText extends TextView {
    @Override
    public Editable getText() { throw new RuntimeException("Stub!"); }
}
