package org.egeunet.demo

import android.content.ContentResolver
import android.graphics.Bitmap
import android.graphics.BitmapFactory
import android.graphics.ColorSpace
import android.graphics.Matrix
import android.media.ExifInterface
import android.net.Uri
import android.os.Build
import java.io.FileNotFoundException
import java.io.IOException
import java.io.InputStream
import org.egeunet.core.AlphaComposite
import org.egeunet.core.PhotoSizePolicy
import org.egeunet.core.RgbImage
import org.egeunet.core.Size

/** A photo as the app decoded it: [image] (upright, subsampled by [sampleSize]) of a photo of size [photo]. */
class DecodedPhoto(val image: RgbImage, val photo: Size, val sampleSize: Int)

/**
 * Contract step 1 on Android: decode a photo subsampled by the core's [PhotoSizePolicy] (so a 50 MP photo never
 * exists at full size in memory), apply its EXIF orientation, and convert it to 8-bit RGB. Transparent pixels are
 * composited over the neutral grey (core `AlphaComposite`), as the Python reader does.
 *
 * This is the one step the golden vectors cannot pin down (JPEG decoders differ in their last bits by design, and
 * subsample in the DCT domain); everything after it is the tested core.
 */
object Photos {
    fun decode(resolver: ContentResolver, uri: Uri, policy: PhotoSizePolicy): DecodedPhoto {
        val orientation =
            try {
                open(resolver, uri).use {
                    ExifInterface(it).getAttributeInt(ExifInterface.TAG_ORIENTATION, ExifInterface.ORIENTATION_NORMAL)
                }
            } catch (e: IOException) {
                ExifInterface.ORIENTATION_NORMAL // no or unreadable EXIF: the decode below says whether it is an image
            }
        val bounds = BitmapFactory.Options()
        bounds.inJustDecodeBounds = true
        open(resolver, uri).use { BitmapFactory.decodeStream(it, null, bounds) }
        if (bounds.outWidth <= 0 || bounds.outHeight <= 0) throw IOException("not an image this phone can decode")
        val stored = Size(bounds.outWidth, bounds.outHeight)
        val photo = if (swapsAxes(orientation)) stored.transposed() else stored
        val sampleSize = policy.sampleSize(photo)

        val options = BitmapFactory.Options()
        options.inPreferredConfig = Bitmap.Config.ARGB_8888
        options.inSampleSize = sampleSize
        val bitmap =
            open(resolver, uri).use { BitmapFactory.decodeStream(it, null, options) }
                ?: throw IOException("not an image this phone can decode")
        keepStoredValues(bitmap)
        val upright = orient(bitmap, orientation)
        val rgb = toRgb(upright)
        if (upright !== bitmap) upright.recycle()
        bitmap.recycle()
        return DecodedPhoto(rgb, photo, sampleSize)
    }

    private fun open(resolver: ContentResolver, uri: Uri): InputStream =
        resolver.openInputStream(uri) ?: throw FileNotFoundException("no content at $uri")

    /** EXIF orientations 5-8 rotate by 90 or 270 degrees: the upright photo has width and height swapped. */
    private fun swapsAxes(orientation: Int) =
        orientation in ExifInterface.ORIENTATION_TRANSPOSE..ExifInterface.ORIENTATION_ROTATE_270

    /**
     * Android 8+ decodes a photo with an ICC profile into that colour space (e.g. Display P3) and `getPixels`
     * converts to sRGB, while the Python contract (PIL) reads the stored values. From Android 10 the bitmap is
     * relabelled as sRGB without converting, so the app reads the stored values too. Android 8-9 keep the
     * conversion (no relabelling API): a wide-gamut photo's values then differ slightly from Python's (README).
     */
    private fun keepStoredValues(bitmap: Bitmap) {
        if (Build.VERSION.SDK_INT < RELABEL_MIN_SDK) return
        val srgb = ColorSpace.get(ColorSpace.Named.SRGB)
        val space = bitmap.colorSpace ?: return
        if (space == srgb) return
        try {
            bitmap.setColorSpace(srgb)
        } catch (e: IllegalArgumentException) {
            // a colour space that cannot be relabelled (e.g. another transfer curve): getPixels converts it
        }
    }

    /** The rotation/mirroring that EXIF [orientation] asks for (what PIL's `ImageOps.exif_transpose` applies). */
    fun orient(bitmap: Bitmap, orientation: Int): Bitmap {
        val m = Matrix()
        when (orientation) {
            ExifInterface.ORIENTATION_FLIP_HORIZONTAL -> m.postScale(-1f, 1f)

            ExifInterface.ORIENTATION_ROTATE_180 -> m.postRotate(180f)

            ExifInterface.ORIENTATION_FLIP_VERTICAL -> m.postScale(1f, -1f)

            ExifInterface.ORIENTATION_TRANSPOSE -> {
                m.postRotate(90f)
                m.postScale(-1f, 1f)
            }

            ExifInterface.ORIENTATION_ROTATE_90 -> m.postRotate(90f)

            ExifInterface.ORIENTATION_TRANSVERSE -> {
                m.postRotate(-90f)
                m.postScale(-1f, 1f)
            }

            ExifInterface.ORIENTATION_ROTATE_270 -> m.postRotate(270f)

            else -> return bitmap
        }
        return Bitmap.createBitmap(bitmap, 0, 0, bitmap.width, bitmap.height, m, false)
    }

    /** ARGB bitmap -> interleaved RGB bytes, one row at a time, alpha over the core's grey. */
    fun toRgb(bitmap: Bitmap): RgbImage {
        val w = bitmap.width
        val h = bitmap.height
        val row = IntArray(w)
        val out = ByteArray(w * h * 3)
        for (y in 0 until h) {
            bitmap.getPixels(row, 0, w, 0, y, w, 1)
            AlphaComposite.argbToRgb(row, 0, out, y * w * 3, w)
        }
        return RgbImage(w, h, out)
    }

    fun toBitmap(image: RgbImage): Bitmap {
        val w = image.width
        val bitmap = Bitmap.createBitmap(w, image.height, Bitmap.Config.ARGB_8888)
        val row = IntArray(w)
        val p = image.pixels
        for (y in 0 until image.height) {
            for (x in 0 until w) {
                val o = (y * w + x) * 3
                row[x] =
                    (0xFF shl 24) or ((p[o].toInt() and 0xFF) shl 16) or ((p[o + 1].toInt() and 0xFF) shl 8) or
                    (p[o + 2].toInt() and 0xFF)
            }
            bitmap.setPixels(row, 0, w, 0, y, w, 1)
        }
        return bitmap
    }

    /** `Bitmap.setColorSpace` exists from Android 10 (API 29). */
    private const val RELABEL_MIN_SDK = 29
}
