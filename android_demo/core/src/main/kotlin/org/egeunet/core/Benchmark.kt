package org.egeunet.core

import kotlin.math.floor
import kotlin.math.sqrt

/**
 * Summary of latency samples in milliseconds. Percentiles interpolate linearly between order statistics, as
 * NumPy's default `percentile` does, so the phone's p50/p90 read the same as `egeunet bench` figures.
 */
data class LatencyStats(
    val count: Int,
    val minMs: Double,
    val maxMs: Double,
    val meanMs: Double,
    val stdMs: Double,
    val p50Ms: Double,
    val p90Ms: Double,
    val p99Ms: Double,
) {
    companion object {
        fun of(samplesMs: DoubleArray): LatencyStats {
            require(samplesMs.isNotEmpty()) { "no latency samples" }
            require(samplesMs.all { it.isFinite() && it >= 0.0 }) { "latency samples must be finite and >= 0" }
            val sorted = samplesMs.sortedArray()
            val mean = sorted.sum() / sorted.size
            val variance = sorted.sumOf { (it - mean) * (it - mean) } / sorted.size
            return LatencyStats(
                count = sorted.size,
                minMs = sorted.first(),
                maxMs = sorted.last(),
                meanMs = mean,
                stdMs = sqrt(variance),
                p50Ms = percentile(sorted, 50.0),
                p90Ms = percentile(sorted, 90.0),
                p99Ms = percentile(sorted, 99.0),
            )
        }

        /** [q]-th percentile (0..100) of ascending [sorted], linear interpolation (NumPy's "linear" method). */
        fun percentile(sorted: DoubleArray, q: Double): Double {
            require(sorted.isNotEmpty()) { "no samples" }
            require(q in 0.0..100.0) { "percentile must be within 0..100, got $q" }
            val rank = q / 100.0 * (sorted.size - 1)
            val lo = floor(rank).toInt()
            val hi = minOf(lo + 1, sorted.size - 1)
            val frac = rank - lo
            return sorted[lo] + (sorted[hi] - sorted[lo]) * frac
        }
    }
}

/** What a benchmark measured and with which runtime configuration. */
data class BenchmarkResult(val engine: String, val warmupRuns: Int, val firstMs: Double, val stats: LatencyStats)

/**
 * The benchmark loop: [warmup] untimed-for-statistics runs (the first one is reported separately, it includes
 * delegate initialisation), then [runs] timed runs. The clock and the inference are injected, so the loop is
 * tested on the JVM with a fake clock and runs unchanged on the phone with `System.nanoTime` and the interpreter.
 */
class BenchmarkRunner(private val nanoClock: () -> Long) {
    fun run(
        engine: String,
        warmup: Int,
        runs: Int,
        inference: () -> Unit,
        onProgress: (done: Int, total: Int) -> Unit = { _, _ -> },
        cancelled: () -> Boolean = { false },
    ): BenchmarkResult {
        require(warmup >= 1) { "warmup must be at least 1 (the first run is reported on its own), got $warmup" }
        require(runs >= 1) { "runs must be at least 1, got $runs" }
        val total = warmup + runs
        var firstMs = 0.0
        val samples = DoubleArray(runs)
        for (i in 0 until total) {
            if (cancelled()) throw InterruptedException("benchmark cancelled after $i of $total runs")
            val t0 = nanoClock()
            inference()
            val ms = (nanoClock() - t0) / 1e6
            if (i == 0) firstMs = ms
            if (i >= warmup) samples[i - warmup] = ms
            onProgress(i + 1, total)
        }
        return BenchmarkResult(engine, warmup, firstMs, LatencyStats.of(samples))
    }
}
