package org.egeunet.core

/**
 * A small JSON reader and a writer of Python's canonical form, so the core needs no library.
 *
 * Why not org.json: it ships with Android but not with the JVM the unit tests run on. Why keep number literals as
 * text ([JsonNumber]): the contract's fingerprint is the sha256 of Python's `json.dumps(contract, sort_keys=True)`,
 * and Python writes floats with `repr` ("255.0", "1e-05"); re-emitting the literal the exporter wrote reproduces
 * Python's text exactly, which re-formatting a Double on the JVM would not.
 */
class JsonNumber(val literal: String) {
    fun toDouble(): Double = literal.toDouble()

    fun toLong(): Long = literal.toLongOrNull() ?: throw JsonException("expected an integer, got $literal")

    fun toInt(): Int {
        val v = toLong()
        if (v !in Int.MIN_VALUE..Int.MAX_VALUE) throw JsonException("integer out of range: $literal")
        return v.toInt()
    }

    override fun equals(other: Any?): Boolean = other is JsonNumber && other.literal == literal

    override fun hashCode(): Int = literal.hashCode()

    override fun toString(): String = literal
}

class JsonException(message: String) : IllegalArgumentException(message)

object Json {
    /** Parse a JSON text into Map (insertion-ordered), List, String, [JsonNumber], Boolean or null. */
    fun parse(text: String): Any? {
        val parser = Parser(text)
        parser.skipWhitespace()
        val value = parser.value()
        parser.skipWhitespace()
        if (!parser.atEnd()) throw parser.error("unexpected trailing characters")
        return value
    }

    /** Python's `json.dumps(value, sort_keys=True)`: ", " and ": " separators, ASCII-only escapes. */
    fun dumpsSorted(value: Any?): String = StringBuilder().also { write(it, value) }.toString()

    private fun write(out: StringBuilder, value: Any?) {
        when (value) {
            null -> out.append("null")

            is Boolean -> out.append(if (value) "true" else "false")

            is JsonNumber -> out.append(value.literal)

            is Int, is Long -> out.append(value.toString())

            is String -> writeString(out, value)

            is Map<*, *> -> {
                out.append('{')
                value.keys.map { it as String }.sorted().forEachIndexed { i, key ->
                    if (i > 0) out.append(", ")
                    writeString(out, key)
                    out.append(": ")
                    write(out, value[key])
                }
                out.append('}')
            }

            is List<*> -> {
                out.append('[')
                value.forEachIndexed { i, item ->
                    if (i > 0) out.append(", ")
                    write(out, item)
                }
                out.append(']')
            }

            else -> throw JsonException("cannot write ${value::class.simpleName} as JSON")
        }
    }

    private fun writeString(out: StringBuilder, s: String) {
        out.append('"')
        for (c in s) {
            when {
                c == '"' -> out.append("\\\"")
                c == '\\' -> out.append("\\\\")
                c == '\n' -> out.append("\\n")
                c == '\r' -> out.append("\\r")
                c == '\t' -> out.append("\\t")
                c == '\b' -> out.append("\\b")
                c == '\u000C' -> out.append("\\f")
                c.code < 0x20 || c.code > 0x7E -> out.append("\\u").append(String.format("%04x", c.code))
                else -> out.append(c)
            }
        }
        out.append('"')
    }

    private class Parser(private val s: String) {
        private var i = 0

        fun atEnd() = i >= s.length

        fun error(what: String) = JsonException("invalid JSON at character $i: $what")

        fun skipWhitespace() {
            while (i < s.length && s[i] in " \t\r\n") i++
        }

        fun value(): Any? {
            if (atEnd()) throw error("unexpected end")
            return when (val c = s[i]) {
                '{' -> obj()
                '[' -> array()
                '"' -> string()
                't' -> literal("true", true)
                'f' -> literal("false", false)
                'n' -> literal("null", null)
                else -> if (c == '-' || c.isDigit()) number() else throw error("unexpected '$c'")
            }
        }

        private fun literal(word: String, result: Any?): Any? {
            if (!s.startsWith(word, i)) throw error("expected $word")
            i += word.length
            return result
        }

        private fun obj(): Map<String, Any?> {
            val out = LinkedHashMap<String, Any?>()
            i++
            skipWhitespace()
            if (!atEnd() && s[i] == '}') return out.also { i++ }
            while (true) {
                skipWhitespace()
                if (atEnd() || s[i] != '"') throw error("expected a key")
                val key = string()
                skipWhitespace()
                expect(':')
                skipWhitespace()
                out[key] = value()
                skipWhitespace()
                if (atEnd()) throw error("unterminated object")
                if (s[i] == ',') {
                    i++
                    continue
                }
                expect('}')
                return out
            }
        }

        private fun array(): List<Any?> {
            val out = ArrayList<Any?>()
            i++
            skipWhitespace()
            if (!atEnd() && s[i] == ']') return out.also { i++ }
            while (true) {
                skipWhitespace()
                out.add(value())
                skipWhitespace()
                if (atEnd()) throw error("unterminated array")
                if (s[i] == ',') {
                    i++
                    continue
                }
                expect(']')
                return out
            }
        }

        private fun expect(c: Char) {
            if (atEnd() || s[i] != c) throw error("expected '$c'")
            i++
        }

        private fun string(): String {
            val out = StringBuilder()
            i++
            while (true) {
                if (atEnd()) throw error("unterminated string")
                val c = s[i++]
                when {
                    c == '"' -> return out.toString()

                    c == '\\' -> {
                        if (atEnd()) throw error("unterminated escape")
                        when (val e = s[i++]) {
                            '"', '\\', '/' -> out.append(e)

                            'b' -> out.append('\b')

                            'f' -> out.append('\u000C')

                            'n' -> out.append('\n')

                            'r' -> out.append('\r')

                            't' -> out.append('\t')

                            'u' -> {
                                if (i + 4 > s.length) throw error("short \\u escape")
                                out.append(
                                    s.substring(i, i + 4).toIntOrNull(16)?.toChar() ?: throw error("bad \\u escape"),
                                )
                                i += 4
                            }

                            else -> throw error("bad escape '\\$e'")
                        }
                    }

                    c.code < 0x20 -> throw error("control character in string")

                    else -> out.append(c)
                }
            }
        }

        private fun number(): JsonNumber {
            val start = i
            if (s[i] == '-') i++
            while (i < s.length && (s[i].isDigit() || s[i] in ".eE+-")) i++
            val literal = s.substring(start, i)
            literal.toDoubleOrNull() ?: throw error("bad number '$literal'")
            return JsonNumber(literal)
        }
    }
}

/** Typed access to parsed JSON objects with errors that name the missing or mistyped field. */
class JsonObject(private val map: Map<String, Any?>, private val where: String) {
    val raw: Map<String, Any?> get() = map

    fun has(key: String) = map.containsKey(key)

    private fun field(key: String): Any? =
        if (map.containsKey(key)) map[key] else throw JsonException("$where: missing field '$key'")

    private fun fail(key: String, what: String): Nothing =
        throw JsonException("$where: field '$key' must be $what, got ${map[key]}")

    fun string(key: String): String = field(key) as? String ?: fail(key, "a string")

    fun int(key: String): Int = (field(key) as? JsonNumber)?.toInt() ?: fail(key, "an integer")

    fun double(key: String): Double = (field(key) as? JsonNumber)?.toDouble() ?: fail(key, "a number")

    fun boolean(key: String): Boolean = field(key) as? Boolean ?: fail(key, "true or false")

    fun obj(key: String): JsonObject {
        @Suppress("UNCHECKED_CAST")
        val m = field(key) as? Map<String, Any?> ?: fail(key, "an object")
        return JsonObject(m, "$where.$key")
    }

    fun list(key: String): List<Any?> = field(key) as? List<*> ?: fail(key, "a list")

    fun ints(key: String): List<Int> = list(key).map { (it as? JsonNumber)?.toInt() ?: fail(key, "a list of integers") }

    /** Tensor dimensions: integers, with a symbolic one (a name such as "batch") as -1. */
    fun dims(key: String): List<Int> = list(key).map {
        when (it) {
            is JsonNumber -> it.toInt()
            is String -> -1
            else -> fail(key, "a list of dimensions")
        }
    }

    fun doubles(key: String): List<Double> = list(key).map {
        (it as? JsonNumber)?.toDouble()
            ?: fail(key, "a list of numbers")
    }

    companion object {
        fun parse(text: String, where: String): JsonObject {
            @Suppress("UNCHECKED_CAST")
            val m = Json.parse(text) as? Map<String, Any?> ?: throw JsonException("$where: expected a JSON object")
            return JsonObject(m, where)
        }
    }
}
