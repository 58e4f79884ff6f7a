package org.egeunet.core

import java.io.FileNotFoundException
import java.io.IOException

/**
 * What the user reads when something fails: one place, so every failure a user can cause or meet has a message
 * (tested in `FailuresTest`), and the app stays usable after it.
 */
object Failures {
    /** A short reason for [e]: its message, else its class name; native-library failures say so. */
    fun reason(e: Throwable): String {
        val msg = e.message?.lineSequence()?.firstOrNull()?.trim().orEmpty()
        val what =
            when (e) {
                is UnsatisfiedLinkError -> "native library not loadable"
                is NoClassDefFoundError, is ExceptionInInitializerError -> "runtime library missing or broken"
                is OutOfMemoryError -> "out of memory"
                else -> null
            }
        return when {
            what != null && msg.isNotEmpty() -> "$what: $msg"
            what != null -> what
            msg.isNotEmpty() -> msg
            else -> e.javaClass.simpleName
        }
    }

    /** Why the photo [photo] (a URI or name) could not be read, and what to do. */
    fun photo(photo: String, e: Throwable): String = when (e) {
        is SecurityException ->
            "No permission to read $photo any more (the app that shared it withdrew access): pick the photo again."

        is FileNotFoundException -> "$photo is gone or cannot be opened (${reason(e)}): pick the photo again."

        is OutOfMemoryError -> "Not enough memory to decode $photo on this phone; try a smaller photo."

        is IOException -> "Cannot read $photo: ${reason(e)}"

        else -> "Cannot read $photo: ${reason(e)}"
    }

    /** Why segmenting the decoded photo failed (the engine stays as it was). */
    fun inference(e: Throwable): String = when (e) {
        is OutOfMemoryError -> "Not enough memory to segment this photo (${reason(e)}); try a smaller photo."
        else -> "Inference failed: ${reason(e)}"
    }

    /** The model asset could not be loaded or is not usable. */
    fun model(asset: String, e: Throwable): String = when (e) {
        is FileNotFoundException ->
            if (e.message.orEmpty().contains("compressed")) {
                "$asset is compressed in the APK and cannot be memory-mapped: keep noCompress += \"tflite\" in " +
                    "app/build.gradle.kts."
            } else {
                "No $asset in the app: build it with -Pegeunet.model=FILE (see android_demo/README.md)."
            }

        is ContractException -> "This model cannot be used: ${reason(e)}"

        else -> "Cannot load $asset: ${reason(e)}"
    }
}

/** The engine that started (null: none could) and the one line to show about it. */
class EngineStart<E : InferenceEngine>(val engine: E?, val message: String, val fellBack: Boolean)

/**
 * Start the engine the user asked for ([requestedLabel], e.g. "GPU delegate") with [requested]; if it cannot
 * start, and it was not already the CPU ([cpu] non-null), fall back to [cpu]. The message tells the truth: "using the
 * CPU" only when the CPU engine did start. Catches exceptions and linkage errors (a missing native library throws
 * `UnsatisfiedLinkError`, an `Error`), so nothing escapes to the worker thread.
 */
fun <E : InferenceEngine> startEngine(requestedLabel: String, requested: () -> E, cpu: (() -> E)?): EngineStart<E> {
    val first = attempt(requested)
    first.engine?.let { return EngineStart(it, "Ready: ${it.description}", fellBack = false) }
    val why = Failures.reason(first.error!!)
    if (cpu == null) {
        return EngineStart(null, "The $requestedLabel engine could not start ($why): the model cannot run.", false)
    }
    val second = attempt(cpu)
    second.engine?.let {
        return EngineStart(it, "$requestedLabel could not start ($why); using the CPU instead: ${it.description}", true)
    }
    val cpuWhy = Failures.reason(second.error!!)
    return EngineStart(
        null,
        "$requestedLabel could not start ($why), and the CPU could not either ($cpuWhy): the model cannot run.",
        fellBack = false,
    )
}

private class Attempt<E>(val engine: E?, val error: Throwable?)

private fun <E> attempt(create: () -> E): Attempt<E> = try {
    Attempt(create(), null)
} catch (e: Exception) {
    Attempt(null, e)
} catch (e: LinkageError) {
    Attempt(null, e)
} catch (e: OutOfMemoryError) {
    Attempt(null, e)
}

/**
 * What a delegate took of the graph, from LiteRT's own log line (`Replacing N out of M node(s) with delegate (NAME)
 * node, yielding K partitions`; older builds omit "out of M"), which LiteRT prints on Android in production builds
 * too. The CPU engine's XNNPACK is a delegate as well, so lines are told apart by the delegate's [delegate] name.
 */
data class Delegation(val delegated: Int, val total: Int?, val delegate: String, val partitions: Int) {
    /** "all 41 ops on the GPU delegate (1 partition)" or "30 of 41 ops on the GPU delegate, 11 on the CPU (...)". */
    fun describe(label: String): String {
        val parts = if (partitions == 1) "1 partition" else "$partitions partitions"
        return when {
            total != null && delegated >= total -> "all $total ops on the $label ($parts)"
            total != null -> "$delegated of $total ops on the $label, ${total - delegated} on the CPU ($parts)"
            else -> "$delegated ops on the $label, any others on the CPU ($parts)"
        }
    }

    companion object {
        private val LINE =
            Regex(
                """Replacing (\d+)(?: out of (\d+))? node\(s\) with delegate \(([^)]*)\) node, """ +
                    """yielding (\d+) partitions""",
            )

        /** Every delegation reported in [log] (logcat text) by a delegate whose name contains [nameContains]. */
        fun parseAll(log: String, nameContains: String): List<Delegation> = LINE.findAll(log)
            .map {
                val (n, total, name, parts) = it.destructured
                Delegation(n.toInt(), total.toIntOrNull(), name, parts.toInt())
            }.filter { it.delegate.contains(nameContains, ignoreCase = true) }
            .toList()

        /**
         * The delegation reported after [before] was read: the last line of [after] beyond the ones [before]
         * already held, or null when there is none or a log could not be read (null).
         */
        fun reportedSince(before: String?, after: String?, nameContains: String): Delegation? {
            if (before == null || after == null) return null
            val seen = parseAll(before, nameContains).size
            return parseAll(after, nameContains).drop(seen).lastOrNull()
        }

        /** What to show after "Ran on:" for an engine on [label], given what its log said ([d]; null: nothing). */
        fun ranOn(label: String, d: Delegation?): String =
            d?.describe(label) ?: "$label (LiteRT did not report which ops it took; see README, Accelerators)"
    }
}
