// Pure Kotlin/JVM: no Android classes, so its unit tests (golden vectors from `egeunet golden`) run on any JVM.
plugins {
    alias(libs.plugins.kotlin.jvm)
}

kotlin {
    jvmToolchain(17)
}

dependencies {
    testImplementation(kotlin("test-junit"))
    testImplementation(libs.junit)
}
