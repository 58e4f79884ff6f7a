import org.jetbrains.kotlin.gradle.dsl.JvmTarget

plugins {
    alias(libs.plugins.android.application)
    alias(libs.plugins.kotlin.android)
}

android {
    namespace = "org.egeunet.demo"
    compileSdk = 35

    defaultConfig {
        applicationId = "org.egeunet.demo"
        minSdk = 24
        targetSdk = 35
        versionCode = 1
        versionName = "0.1.0"
    }

    buildTypes {
        release {
            isMinifyEnabled = false
        }
    }

    // a JVM target, not a toolchain: compiles on whatever JDK >= 17 runs Gradle (Android Studio's bundled JBR)
    compileOptions {
        sourceCompatibility = JavaVersion.toVersion(libs.versions.jvmTarget.get())
        targetCompatibility = JavaVersion.toVersion(libs.versions.jvmTarget.get())
    }

    // the model copied in by copyEgeunetModel; .tflite stays uncompressed in the APK
    sourceSets["main"].assets.srcDir(layout.buildDirectory.dir("generated/egeunetModel"))
    androidResources {
        noCompress += "tflite"
    }

    // Native libraries (LiteRT's .so files) stay uncompressed and page-aligned in the APK, loaded in place; AGP 8.5.1+
    // aligns them to 16 KB, which Android 15+ devices with 16 KB pages need (README, "16 KB pages").
    packaging {
        jniLibs {
            useLegacyPackaging = false
        }
    }
}

kotlin {
    compilerOptions {
        jvmTarget.set(JvmTarget.fromTarget(libs.versions.jvmTarget.get()))
    }
}

dependencies {
    implementation(project(":core"))
    implementation(libs.litert)
    implementation(libs.litert.gpu)
    implementation(libs.litert.gpu.api)
    implementation(libs.androidx.core)
}

// Copies the model exported by `egeunet export` into the app's assets as egeunet.tflite (its metadata carries the
// preprocessing contract). -Pegeunet.model=FILE (or egeunet.model=FILE in gradle.properties) names it;
// -Pegeunet.contract=FILE adds a contract JSON for a model without embedded metadata.
val egeunetModelDir = layout.buildDirectory.dir("generated/egeunetModel")
val copyEgeunetModel =
    tasks.register("copyEgeunetModel") {
        group = "egeunet"
        description = "Copies the exported EGE-UNet model (-Pegeunet.model=FILE) into the app's assets."
        val model = providers.gradleProperty("egeunet.model")
        val contract = providers.gradleProperty("egeunet.contract")
        val outDir = egeunetModelDir
        outputs.dir(outDir)
        outputs.upToDateWhen { false }
        doLast {
            val src =
                model.orNull?.let { File(it) } ?: throw GradleException(
                    "No model: pass -Pegeunet.model=/path/to/egeunet_fp32.tflite (from `egeunet export`), " +
                        "or set egeunet.model in gradle.properties; see android_demo/README.md",
                )
            if (!src.isFile) throw GradleException("egeunet.model: no such file: $src")
            val dir = outDir.get().asFile
            dir.deleteRecursively()
            dir.mkdirs()
            src.copyTo(File(dir, "egeunet.tflite"))
            contract.orNull?.let { File(it).copyTo(File(dir, "egeunet.json")) }
            logger.lifecycle("egeunet: bundled $src" + (contract.orNull?.let { " with $it" } ?: ""))
        }
    }

tasks.named("preBuild") {
    dependsOn(copyEgeunetModel)
}
