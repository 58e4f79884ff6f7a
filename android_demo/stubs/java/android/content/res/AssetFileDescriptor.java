// STUB for type-checking only (android_demo/stubs/README.md): signatures copied from the public API, bodies throw.
package android.content.res;

import java.io.Closeable;
import java.io.FileDescriptor;
import java.io.IOException;

/** Flattened: the real class also implements Parcelable. */
public class AssetFileDescriptor implements Closeable {
    public FileDescriptor getFileDescriptor() { throw new RuntimeException("Stub!"); }

    public long getStartOffset() { throw new RuntimeException("Stub!"); }

    public long getDeclaredLength() { throw new RuntimeException("Stub!"); }

    public void close() throws IOException { throw new RuntimeException("Stub!"); }
}
