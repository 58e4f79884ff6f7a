// STUB for type-checking only (android_demo/stubs/README.md): signatures copied from the public API, bodies throw.
package android.graphics;

import java.io.InputStream;

public class BitmapFactory {
    public static class Options {
        public Bitmap.Config inPreferredConfig;
        public boolean inJustDecodeBounds;
        public int inSampleSize;
        public int outWidth;
        public int outHeight;

        public Options() { throw new RuntimeException("Stub!"); }
    }

    public static Bitmap decodeStream(InputStream is, Rect outPadding, Options opts) { throw new RuntimeException("Stub!"); }
}
