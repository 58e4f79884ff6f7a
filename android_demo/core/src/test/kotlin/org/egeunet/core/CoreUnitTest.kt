package org.egeunet.core

import kotlin.math.sqrt
import kotlin.test.assertEquals
import kotlin.test.assertFailsWith
import kotlin.test.assertTrue
import org.junit.Test

/** JSON, latency statistics, the benchmark loop with a fake clock, resize properties and the overlay. */
class CoreUnitTest {
    @Test
    fun `json round trip writes Python's json dumps form`() {
        val text = """{"b": [1, 2.5, "\u00e9\n\"q\""], "a": null, "c": {"z": true, "y": 1e-05}}"""
        // Python: json.dumps(json.loads(text), sort_keys=True)
        val python = """{"a": null, "b": [1, 2.5, "\u00e9\n\"q\""], "c": {"y": 1e-05, "z": true}}"""
        assertEquals(python, Json.dumpsSorted(Json.parse(text)))
        assertEquals("é\n\"q\"", ((Json.parse(text) as Map<*, *>)["b"] as List<*>)[2])
        assertFailsWith<JsonException> { Json.parse("[1, 2") }
        assertFailsWith<JsonException> { Json.parse("{\"a\": 1} x") }
        assertFailsWith<JsonException> { Json.parse("{\"a\": tru}") }
    }

    @Test
    fun `latency percentiles interpolate like numpy`() {
        val s = LatencyStats.of(DoubleArray(10) { (10 - it).toDouble() })
        assertEquals(10, s.count)
        assertEquals(1.0, s.minMs)
        assertEquals(10.0, s.maxMs)
        assertEquals(5.5, s.meanMs, 1e-12)
        assertEquals(sqrt(8.25), s.stdMs, 1e-12)
        // numpy.percentile(range(1, 11), [50, 90, 99]) -> 5.5, 9.1, 9.91
        assertEquals(5.5, s.p50Ms, 1e-12)
        assertEquals(9.1, s.p90Ms, 1e-12)
        assertEquals(9.91, s.p99Ms, 1e-12)
        val one = LatencyStats.of(doubleArrayOf(3.0))
        assertEquals(3.0, one.p50Ms)
        assertEquals(3.0, one.p90Ms)
        assertFailsWith<IllegalArgumentException> { LatencyStats.of(DoubleArray(0)) }
        assertFailsWith<IllegalArgumentException> { LatencyStats.of(doubleArrayOf(1.0, Double.NaN)) }
    }

    @Test
    fun `benchmark times only the inference, excludes warmup and reports the first run`() {
        var now = 0L
        val durationsMs = longArrayOf(50, 9, 8, 4, 2, 3, 1, 5)
        var call = 0
        val progress = mutableListOf<Pair<Int, Int>>()
        val result =
            BenchmarkRunner { now }.run(
                engine = "fake",
                warmup = 3,
                runs = 5,
                inference = {
                    now += durationsMs[call++] * 1_000_000
                },
                onProgress = { done, total ->
                    progress += done to total
                    now += 777_000_000 // time outside the timed call must not count
                },
            )
        assertEquals(8, call)
        assertEquals(50.0, result.firstMs, 1e-9)
        assertEquals(5, result.stats.count)
        assertEquals(3.0, result.stats.p50Ms, 1e-9) // median of 4, 2, 3, 1, 5
        assertEquals(4.6, result.stats.p90Ms, 1e-9)
        assertEquals(1.0, result.stats.minMs, 1e-9)
        assertEquals(5.0, result.stats.maxMs, 1e-9)
        assertEquals((1..8).map { it to 8 }, progress)
        assertEquals("fake", result.engine)
    }

    @Test
    fun `benchmark refuses bad counts and stops when cancelled`() {
        val runner = BenchmarkRunner { 0L }
        assertFailsWith<IllegalArgumentException> { runner.run("x", 0, 5, {}) }
        assertFailsWith<IllegalArgumentException> { runner.run("x", 1, 0, {}) }
        var calls = 0
        assertFailsWith<InterruptedException> { runner.run("x", 1, 10, { calls++ }, cancelled = { calls >= 3 }) }
        assertEquals(3, calls)
    }

    @Test
    fun `resize keeps constant images constant in every direction`() {
        for ((w, h) in listOf(640 to 480, 300 to 150, 256 to 256, 17 to 700, 1 to 1)) {
            val img = RgbImage(w, h, ByteArray(w * h * 3) { byteArrayOf(200.toByte(), 150.toByte(), 120)[it % 3] })
            val out = PilBilinear.resize(img, 256, 256)
            assertEquals(256, out.width)
            assertTrue(
                (0 until 256 * 256).all {
                    out[it % 256, it / 256, 0] == 200 && out[it % 256, it / 256, 2] == 120
                },
                "${w}x$h",
            )
            val f = PilBilinear.resizeFloat(FloatArray(w * h) { 0.25f }, w, h, 100, 300)
            assertTrue(f.all { kotlin.math.abs(it - 0.25f) < 1e-6f }, "${w}x$h float")
        }
    }

    @Test
    fun `resize coefficients sum to one and widen when shrinking`() {
        val down = PilBilinear.coefficients(640, 256)
        val up = PilBilinear.coefficients(192, 256)
        assertTrue(down.ksize > up.ksize, "shrinking must use the wider (antialiasing) filter")
        for (c in listOf(down, up)) {
            for (i in 0 until c.outSize) {
                val sum = (0 until c.count[i]).sumOf { c.weights[i * c.ksize + it] }
                assertEquals(1.0, sum, 1e-12)
            }
        }
    }

    @Test
    fun `overlay tints inside, outlines the border, wraps like numpy roll`() {
        val w = 5
        val h = 4
        val img = RgbImage(w, h, ByteArray(w * h * 3) { 100 })
        val mask = ByteArray(w * h)
        for (y in 1..2) for (x in 1..3) mask[y * w + x] = 1
        val out = Postprocess.overlay(img, mask)
        assertEquals(listOf(255, 64, 32), (0..2).map { out[1, 1, it] }, "border pixel is drawn in the outline colour")
        assertEquals(listOf(100, 100, 100), (0..2).map { out[0, 0, it] }, "outside stays untouched")
        // interior of a full mask: every neighbour (wrapping) is in the mask -> tinted, no outline
        val full = Postprocess.overlay(img, ByteArray(w * h) { 1 })
        val tinted = (0.55f * 100f + 0.45f * 255f).toInt()
        assertEquals(tinted, full[0, 0, 0])
        assertEquals(LesionArea(6, 20), Postprocess.area(mask))
        assertEquals(30.0, Postprocess.area(mask).percent, 1e-12)
    }

    @Test
    fun `threshold is inclusive as in Python`() {
        assertTrue(byteArrayOf(0, 1, 1).contentEquals(Postprocess.binarize(floatArrayOf(0.49999997f, 0.5f, 0.9f), 0.5)))
    }
}
