// STUB for type-checking only (android_demo/stubs/README.md): signatures copied from the public API, bodies throw.
package android.widget;

public abstract class CompoundButton extends Button {
    public boolean isChecked() { throw new RuntimeException("Stub!"); }
}
