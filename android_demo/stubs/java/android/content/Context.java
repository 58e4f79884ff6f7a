// STUB for type-checking only (android_demo/stubs/README.md): signatures copied from the public API, bodies throw.
package android.content;

import android.content.res.AssetManager;
import java.io.File;

/** Flattened: the real chain is Activity -> ContextThemeWrapper -> ContextWrapper -> Context. */
public abstract class Context {
    public abstract AssetManager getAssets();

    public abstract ContentResolver getContentResolver();

    public abstract File getCacheDir();

    public abstract String getPackageName();

    public final String getString(int resId) { throw new RuntimeException("Stub!"); }

    public final String getString(int resId, Object... formatArgs) { throw new RuntimeException("Stub!"); }
}
