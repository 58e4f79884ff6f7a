// STUB for type-checking only (android_demo/stubs/README.md): signatures copied from the public API, bodies throw.
package android.os;

public class Process {
    public static final int myPid() { throw new RuntimeException("Stub!"); }
}
