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

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }

    // the model copied in by copyEgeunetModel; .tflite stays uncompressed in the APK
    sourceSets["main"].assets.srcDir(layout.buildDirectory.dir("generated/egeunetModel"))
    androidResources {
        noCompress += "tflite"
    }
}

kotlin {
    jvmToolchain(17)
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
