package org.egeunet.demo

import android.app.Activity
import android.content.ActivityNotFoundException
import android.content.Intent
import android.net.Uri
import android.os.Bundle
import android.provider.MediaStore
import android.widget.Button
import android.widget.EditText
import android.widget.ImageView
import android.widget.RadioButton
import android.widget.RadioGroup
import android.widget.SeekBar
import android.widget.TextView
import androidx.core.content.FileProvider
import androidx.core.view.ViewCompat
import androidx.core.view.WindowInsetsCompat
import java.io.File
import java.io.IOException
import java.nio.ByteBuffer
import java.util.Locale
import java.util.concurrent.ExecutorService
import java.util.concurrent.Executors
import java.util.concurrent.atomic.AtomicBoolean
import org.egeunet.core.BenchmarkRunner
import org.egeunet.core.Failures
import org.egeunet.core.ModelInput
import org.egeunet.core.ModelMetadata
import org.egeunet.core.RgbImage
import org.egeunet.core.Segmentation
import org.egeunet.core.Segmenter
import org.egeunet.core.startEngine

/**
 * The one screen: pick or take a photo, see the lesion mask over it with its area and the inference time, choose
 * CPU threads / GPU / NNAPI, and benchmark N inferences (p50/p90 and what actually ran).
 *
 * All model work runs on one background thread (the interpreter is not thread-safe); the UI thread only shows
 * results. Every task on that thread runs inside [work], so no exception or error escapes it: each failure shows a
 * message (core `Failures`) and the app stays usable. The logic lives in the tested core (`org.egeunet.core`);
 * this class wires it to Android.
 */
class MainActivity : Activity() {
    private val worker: ExecutorService = Executors.newSingleThreadExecutor()
    private val cancelBenchmark = AtomicBoolean(false)

    // owned by the worker thread
    private var model: ByteBuffer? = null
    private var segmenter: Segmenter? = null
    private var engine: LiteRtEngine? = null
    private var lastInput: ModelInput? = null

    private var captureUri: Uri? = null
    private lateinit var image: ImageView
    private lateinit var result: TextView
    private lateinit var status: TextView
    private lateinit var modelInfo: TextView
    private lateinit var benchmarkResult: TextView
    private lateinit var accelerators: RadioGroup
    private lateinit var threadsBar: SeekBar
    private lateinit var threadsLabel: TextView
    private lateinit var runsField: EditText
    private lateinit var benchmarkButton: Button

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        // the camera app may have run while the system killed this process: the photo it wrote is still ours
        captureUri = savedInstanceState?.getString(STATE_CAPTURE_URI)?.let { Uri.parse(it) }
        setContentView(R.layout.activity_main)
        // edge-to-edge (enforced from Android 15 at targetSdk 35): keep the content clear of system bars and cutouts
        ViewCompat.setOnApplyWindowInsetsListener(findViewById(R.id.root)) { v, insets ->
            val bars = insets.getInsets(WindowInsetsCompat.Type.systemBars() or WindowInsetsCompat.Type.displayCutout())
            v.setPadding(bars.left, bars.top, bars.right, bars.bottom)
            WindowInsetsCompat.CONSUMED
        }
        image = findViewById(R.id.image)
        result = findViewById(R.id.result)
        status = findViewById(R.id.status)
        modelInfo = findViewById(R.id.model_info)
        benchmarkResult = findViewById(R.id.benchmark_result)
        accelerators = findViewById(R.id.accelerators)
        threadsBar = findViewById(R.id.threads)
        threadsLabel = findViewById(R.id.threads_label)
        runsField = findViewById(R.id.benchmark_runs)
        benchmarkButton = findViewById(R.id.benchmark)

        findViewById<Button>(R.id.pick).setOnClickListener { pickPhoto() }
        findViewById<Button>(R.id.camera).setOnClickListener { takePhoto() }
        benchmarkButton.setOnClickListener { benchmark() }
        val gpuButton = findViewById<RadioButton>(R.id.accel_gpu)
        gpuButton.isEnabled = false // until the compatibility list (native code) has been asked off the main thread
        findViewById<RadioButton>(R.id.accel_nnapi).isEnabled = Accelerator.nnapiAvailable()
        accelerators.setOnCheckedChangeListener { _, _ -> configureEngine() }
        threadsBar.setOnSeekBarChangeListener(
            object : SeekBar.OnSeekBarChangeListener {
                override fun onProgressChanged(bar: SeekBar, progress: Int, fromUser: Boolean) {
                    threadsLabel.text = getString(R.string.threads_label, threads())
                }

                override fun onStartTrackingTouch(bar: SeekBar) {}

                override fun onStopTrackingTouch(bar: SeekBar) = configureEngine()
            },
        )
        threadsLabel.text = getString(R.string.threads_label, threads())
        work {
            val gpu = Accelerator.gpuAvailable()
            ui { gpuButton.isEnabled = gpu }
        }
        work { loadModel() }
    }

    override fun onSaveInstanceState(outState: Bundle) {
        super.onSaveInstanceState(outState)
        captureUri?.let { outState.putString(STATE_CAPTURE_URI, it.toString()) }
    }

    override fun onDestroy() {
        cancelBenchmark.set(true)
        work { engine?.close() }
        worker.shutdown()
        super.onDestroy()
    }

    /** Run [task] on the worker thread; whatever it throws becomes a message, never a crash of the process. */
    private fun work(task: () -> Unit) {
        try {
            worker.execute {
                try {
                    task()
                } catch (e: Throwable) {
                    showStatus(getString(R.string.unexpected, Failures.reason(e)))
                }
            }
        } catch (e: java.util.concurrent.RejectedExecutionException) {
            // the activity is being destroyed: nothing left to do
        }
    }

    private fun threads() = threadsBar.progress + 1

    private fun accelerator(): Accelerator = when (accelerators.checkedRadioButtonId) {
        R.id.accel_gpu -> Accelerator.GPU
        R.id.accel_nnapi -> Accelerator.NNAPI
        else -> Accelerator.CPU
    }

    private fun ui(block: () -> Unit) = runOnUiThread { block() }

    private fun showStatus(text: String) = ui { status.text = text }

    // --- model -------------------------------------------------------------------------------------------------

    private fun loadModel() {
        try {
            val mapped = ModelFile.map(assets, MODEL_ASSET)
            val meta =
                ModelMetadata.forModel(ModelFile.bytes(mapped), MODEL_ASSET, CONTRACT_ASSET) {
                    readAsset(CONTRACT_ASSET)
                }
            model = mapped
            segmenter = Segmenter(meta)
            val graph = getString(if (meta.preprocessingInGraph) R.string.graph_baked else R.string.graph_raw)
            ui {
                modelInfo.text =
                    getString(
                        R.string.model_info,
                        meta.modelVersion,
                        meta.format,
                        meta.precision,
                        "${meta.input.dtype} ${meta.input.layout} ${meta.input.shape}",
                        graph,
                        meta.contractSha256.take(12),
                    )
            }
        } catch (e: IOException) {
            showStatus(Failures.model(MODEL_ASSET, e))
            return
        } catch (e: IllegalArgumentException) {
            showStatus(Failures.model(MODEL_ASSET, e))
            return
        }
        buildEngine(accelerator(), threads())
    }

    private fun readAsset(name: String): String? = try {
        assets.open(name).use { String(it.readBytes(), Charsets.UTF_8) }
    } catch (e: IOException) {
        null
    }

    private fun configureEngine() {
        val accel = accelerator()
        val n = threads()
        cancelBenchmark.set(true)
        work { buildEngine(accel, n) }
    }

    /**
     * Runs on the worker. A delegate that fails to initialise falls back to the CPU; the message says "using the
     * CPU" only when the CPU engine did start (core `startEngine`, which also catches UnsatisfiedLinkError).
     */
    private fun buildEngine(accel: Accelerator, threads: Int) {
        val buffer = model ?: return
        val meta = segmenter?.metadata ?: return
        engine?.close()
        engine = null
        val cpu = if (accel == Accelerator.CPU) null else ({ LiteRtEngine(buffer, meta, Accelerator.CPU, threads) })
        val started = startEngine(accel.label, { LiteRtEngine(buffer, meta, accel, threads) }, cpu)
        engine = started.engine
        showStatus(started.message)
    }

    // --- photos ------------------------------------------------------------------------------------------------

    private fun pickPhoto() {
        val intent = Intent(Intent.ACTION_GET_CONTENT)
        intent.type = "image/*"
        intent.addCategory(Intent.CATEGORY_OPENABLE)
        startForResult(intent, REQUEST_PICK)
    }

    private fun takePhoto() {
        val dir = File(cacheDir, "photos")
        dir.mkdirs()
        val uri = FileProvider.getUriForFile(this, "$packageName.photos", File(dir, "capture.jpg"))
        captureUri = uri
        val intent = Intent(MediaStore.ACTION_IMAGE_CAPTURE)
        intent.putExtra(MediaStore.EXTRA_OUTPUT, uri)
        intent.addFlags(Intent.FLAG_GRANT_WRITE_URI_PERMISSION or Intent.FLAG_GRANT_READ_URI_PERMISSION)
        startForResult(intent, REQUEST_CAPTURE)
    }

    private fun startForResult(intent: Intent, request: Int) {
        try {
            startActivityForResult(intent, request)
        } catch (e: ActivityNotFoundException) {
            status.text = getString(R.string.no_app_for, intent.action)
        }
    }

    override fun onActivityResult(requestCode: Int, resultCode: Int, data: Intent?) {
        super.onActivityResult(requestCode, resultCode, data)
        if (resultCode != RESULT_OK) return
        val uri = (if (requestCode == REQUEST_CAPTURE) captureUri else data?.data) ?: return
        status.text = getString(R.string.segmenting)
        work { segment(uri) }
    }

    /** Runs on the worker: decode (subsampled by the core's size policy), segment, show the overlay and figures. */
    private fun segment(uri: Uri) {
        val seg = segmenter
        val eng = engine
        if (seg == null || eng == null) {
            showStatus(getString(R.string.no_engine))
            return
        }
        val photo: DecodedPhoto
        try {
            photo = Photos.decode(contentResolver, uri, seg.sizePolicy)
        } catch (e: IOException) {
            showStatus(Failures.photo(uri.toString(), e))
            return
        } catch (e: SecurityException) {
            showStatus(Failures.photo(uri.toString(), e)) // a revoked URI grant
            return
        } catch (e: OutOfMemoryError) {
            showStatus(Failures.photo(uri.toString(), e))
            return
        }
        val (s, overlay) =
            try {
                val s: Segmentation = seg.segment(photo.image, eng, photo.photo)
                s to Photos.toBitmap(s.overlay())
            } catch (e: RuntimeException) {
                showStatus(Failures.inference(e))
                return
            } catch (e: OutOfMemoryError) {
                showStatus(Failures.inference(e))
                return
            }
        lastInput = s.input
        val text =
            getString(
                R.string.result,
                String.format(Locale.US, "%.2f", s.area.percent),
                s.photo.toString(),
                s.area.pixels,
                s.display.toString(),
                photo.sampleSize,
                String.format(Locale.US, "%.1f", s.inferenceMs),
                String.format(Locale.US, "%.1f", s.preprocessMs),
                String.format(Locale.US, "%.1f", s.postprocessMs),
                s.engine,
            )
        ui {
            image.setImageBitmap(overlay)
            result.text = text
            status.text = getString(R.string.done)
        }
    }

    // --- benchmark ---------------------------------------------------------------------------------------------

    private fun benchmark() {
        val runs = runsField.text.toString().toIntOrNull()
        if (runs == null || runs < 1 || runs > MAX_RUNS) {
            status.text = getString(R.string.bad_runs, MAX_RUNS)
            return
        }
        cancelBenchmark.set(false)
        benchmarkButton.isEnabled = false
        work {
            try {
                runBenchmark(runs)
            } finally {
                ui { benchmarkButton.isEnabled = true }
            }
        }
    }

    /** Runs on the worker: N timed inferences on the last photo's tensor (or a grey image if there is none). */
    private fun runBenchmark(runs: Int) {
        val eng = engine
        val seg = segmenter
        if (eng == null || seg == null) {
            showStatus(getString(R.string.no_engine))
            return
        }
        val input = lastInput ?: seg.prepare(greyImage(seg.metadata))
        val r =
            try {
                BenchmarkRunner(System::nanoTime).run(
                    engine = eng.description,
                    warmup = WARMUP_RUNS,
                    runs = runs,
                    inference = { eng.run(input) },
                    onProgress = { done, total -> if (done % 10 == 0 || done == total) showProgress(done, total) },
                    cancelled = { cancelBenchmark.get() },
                )
            } catch (e: InterruptedException) {
                showStatus(getString(R.string.benchmark_cancelled))
                return
            } catch (e: RuntimeException) {
                showStatus(Failures.inference(e))
                return
            }
        val st = r.stats
        val f = { v: Double -> String.format(Locale.US, "%.2f", v) }
        val text =
            getString(
                R.string.benchmark_result,
                st.count,
                f(st.p50Ms),
                f(st.p90Ms),
                f(st.meanMs),
                f(st.minMs),
                f(r.firstMs),
                r.engine,
            )
        ui {
            benchmarkResult.text = text
            status.text = getString(R.string.done)
        }
    }

    private fun showProgress(done: Int, total: Int) = showStatus(getString(R.string.benchmark_progress, done, total))

    private fun greyImage(meta: ModelMetadata): RgbImage {
        val n = meta.inputWidth * meta.inputHeight * 3
        return RgbImage(meta.inputWidth, meta.inputHeight, ByteArray(n) { 128.toByte() })
    }

    companion object {
        const val MODEL_ASSET = "egeunet.tflite"
        const val CONTRACT_ASSET = "egeunet.json"
        private const val STATE_CAPTURE_URI = "org.egeunet.demo.captureUri"
        private const val REQUEST_PICK = 1
        private const val REQUEST_CAPTURE = 2
        private const val WARMUP_RUNS = 5
        private const val MAX_RUNS = 10_000
    }
}
