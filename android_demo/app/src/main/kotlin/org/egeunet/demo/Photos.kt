package org.egeunet.demo

import android.content.ContentResolver
import android.graphics.Bitmap
import android.graphics.BitmapFactory
import android.graphics.Matrix
import android.media.ExifInterface
import android.net.Uri
import java.io.IOException
import org.egeunet.core.RgbImage

/**
 * Contract step 1 on Android: decode a photo, apply its EXIF orientation, and convert it to 8-bit RGB.
 *
 * This is the one step the golden vectors cannot pin down (JPEG decoders differ in their last bits by design);
 * everything after it is the tested core. Alpha is composited on black, as the Python reader does.
 */
object Photos {
    fun decode(resolver: ContentResolver, uri: Uri): RgbImage {
        val options = BitmapFactory.Options()
        options.inPreferredConfig = Bitmap.Config.ARGB_8888
        val bitmap =
            resolver.openInputStream(uri)?.use { BitmapFactory.decodeStream(it, null, options) }
                ?: throw IOException("cannot decode $uri as an image")
        val orientation =
            resolver.openInputStream(uri)?.use {
                ExifInterface(it).getAttributeInt(ExifInterface.TAG_ORIENTATION, ExifInterface.ORIENTATION_NORMAL)
            } ?: ExifInterface.ORIENTATION_NORMAL
        val upright = orient(bitmap, orientation)
        val rgb = toRgb(upright)
        if (upright !== bitmap) upright.recycle()
        bitmap.recycle()
        return rgb
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

    /** ARGB bitmap -> interleaved RGB bytes, one row at a time (a 12 MP photo needs no second int copy). */
    fun toRgb(bitmap: Bitmap): RgbImage {
        val w = bitmap.width
        val h = bitmap.height
        val row = IntArray(w)
        val out = ByteArray(w * h * 3)
        for (y in 0 until h) {
            bitmap.getPixels(row, 0, w, 0, y, w, 1)
            for (x in 0 until w) {
                val c = row[x]
                val a = (c ushr 24) and 0xFF
                val o = (y * w + x) * 3
                out[o] = blend((c shr 16) and 0xFF, a)
                out[o + 1] = blend((c shr 8) and 0xFF, a)
                out[o + 2] = blend(c and 0xFF, a)
            }
        }
        return RgbImage(w, h, out)
    }

    private fun blend(v: Int, alpha: Int): Byte = (if (alpha == 255) v else (v * alpha + 127) / 255).toByte()

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
}
