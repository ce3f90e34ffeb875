plugins {
    id("com.android.application")
    id("org.jetbrains.kotlin.android")
    id("org.jetbrains.kotlin.plugin.compose")
}

android {
    namespace = "cn.gridlink.app"
    compileSdk = 35
    defaultConfig {
        applicationId = "cn.gridlink.app"
        minSdk = 26
        targetSdk = 35
    }
    buildFeatures { compose = true }
    // The generated bindings and the shared logic are compiled into the app.
    sourceSets["main"].java.srcDirs("../../kotlin-shell/src", "../../../target/bindings/kotlin")
}

dependencies {
    implementation("net.java.dev.jna:jna:5.13.0@aar")
    implementation("org.jetbrains.kotlinx:kotlinx-coroutines-android:1.9.0")
    implementation("androidx.activity:activity-compose:1.9.3")
    implementation("androidx.compose.material3:material3:1.3.1")
    implementation("androidx.work:work-runtime-ktx:2.10.0")
}
