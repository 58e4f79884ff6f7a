// STUB for type-checking only (android_demo/stubs/README.md): signatures copied from the public API, bodies throw.
package androidx.core.content;

import android.content.Context;
import android.net.Uri;
import java.io.File;

/** From androidx.core:core (a Maven dependency of the app), not the platform. */
public class FileProvider {
    public static Uri getUriForFile(Context context, String authority, File file) { throw new RuntimeException("Stub!"); }
}
