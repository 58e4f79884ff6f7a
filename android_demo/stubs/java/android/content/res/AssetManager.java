// STUB for type-checking only (android_demo/stubs/README.md): signatures copied from the public API, bodies throw.
package android.content.res;

import java.io.IOException;
import java.io.InputStream;

public final class AssetManager implements AutoCloseable {
    public InputStream open(String fileName) throws IOException { throw new RuntimeException("Stub!"); }

    public AssetFileDescriptor openFd(String fileName) throws IOException { throw new RuntimeException("Stub!"); }

    public void close() { throw new RuntimeException("Stub!"); }
}
