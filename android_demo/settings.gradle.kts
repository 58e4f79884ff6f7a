// EGE-UNet Android demo: a pure-Kotlin core (tested on the JVM, also by android_demo/ci.sh) and a thin app.
pluginManagement {
    repositories {
        google()
        mavenCentral()
        gradlePluginPortal()
    }
}

dependencyResolutionManagement {
    repositoriesMode.set(RepositoriesMode.FAIL_ON_PROJECT_REPOS)
    repositories {
        google()
        mavenCentral()
    }
}

rootProject.name = "egeunet-android-demo"
include(":core", ":app")
