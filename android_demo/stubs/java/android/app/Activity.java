// STUB for type-checking only (android_demo/stubs/README.md): signatures copied from the public API, bodies throw.
package android.app;

import android.content.ContentResolver;
import android.content.Context;
import android.content.Intent;
import android.content.res.AssetManager;
import android.os.Bundle;
import android.view.View;
import java.io.File;

public class Activity extends Context {
    public static final int RESULT_OK = -1;

    public Activity() { throw new RuntimeException("Stub!"); }

    protected void onCreate(Bundle savedInstanceState) { throw new RuntimeException("Stub!"); }

    protected void onSaveInstanceState(Bundle outState) { throw new RuntimeException("Stub!"); }

    protected void onDestroy() { throw new RuntimeException("Stub!"); }

    protected void onActivityResult(int requestCode, int resultCode, Intent data) { throw new RuntimeException("Stub!"); }

    public void setContentView(int layoutResID) { throw new RuntimeException("Stub!"); }

    public <T extends View> T findViewById(int id) { throw new RuntimeException("Stub!"); }

    public final void runOnUiThread(Runnable action) { throw new RuntimeException("Stub!"); }

    public void startActivityForResult(Intent intent, int requestCode) { throw new RuntimeException("Stub!"); }

    public AssetManager getAssets() { throw new RuntimeException("Stub!"); }

    public ContentResolver getContentResolver() { throw new RuntimeException("Stub!"); }

    public File getCacheDir() { throw new RuntimeException("Stub!"); }

    public String getPackageName() { throw new RuntimeException("Stub!"); }
}
