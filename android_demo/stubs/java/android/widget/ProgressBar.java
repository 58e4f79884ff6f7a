// STUB for type-checking only (android_demo/stubs/README.md): signatures copied from the public API, bodies throw.
package android.widget;

import android.view.View;

public class ProgressBar extends View {
    public synchronized int getProgress() { throw new RuntimeException("Stub!"); }

    public synchronized void setProgress(int progress) { throw new RuntimeException("Stub!"); }

    public synchronized void setMax(int max) { throw new RuntimeException("Stub!"); }
}
