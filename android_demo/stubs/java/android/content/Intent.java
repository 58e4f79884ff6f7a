// STUB for type-checking only (android_demo/stubs/README.md): signatures copied from the public API, bodies throw.
package android.content;

import android.net.Uri;
import android.os.Parcelable;

public class Intent {
    public static final String ACTION_GET_CONTENT = "android.intent.action.GET_CONTENT";
    public static final String CATEGORY_OPENABLE = "android.intent.category.OPENABLE";
    public static final int FLAG_GRANT_READ_URI_PERMISSION = 1;
    public static final int FLAG_GRANT_WRITE_URI_PERMISSION = 2;

    public Intent(String action) { throw new RuntimeException("Stub!"); }

    public String getAction() { throw new RuntimeException("Stub!"); }

    public Uri getData() { throw new RuntimeException("Stub!"); }

    public String getType() { throw new RuntimeException("Stub!"); }

    public Intent setType(String type) { throw new RuntimeException("Stub!"); }

    public Intent addCategory(String category) { throw new RuntimeException("Stub!"); }

    public Intent addFlags(int flags) { throw new RuntimeException("Stub!"); }

    public Intent putExtra(String name, Parcelable value) { throw new RuntimeException("Stub!"); }
}
