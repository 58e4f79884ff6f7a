// STUB for type-checking only (android_demo/stubs/README.md): signatures copied from the public API, bodies throw.
package android.text;

public interface Editable extends CharSequence {
}
